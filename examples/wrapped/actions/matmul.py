# /// script
# requires-python = ">=3.11"
# dependencies = ["minio"]
# ///
"""matmul: the product of two matrices stored as objects. A CPU-heavy pure function owdedup
did not write, deduplicated by the conductor matmul-dedup that examples/wrapped/manifest.yaml
declares beside it (keyed by the content of both matrices).

Matrices are NumPy ``.npy`` files (format 1.0 to 3.0, 2-D, C order, little-endian float64,
float32, int64 or int32), read and written here in pure Python: OpenWhisk's python:3.11
image does not ship NumPy, and ``numpy.save``/``numpy.load`` still write and read them.

Input:  {"a_bucket": "matrices", "a_key": "a.npy", "b_bucket": "matrices", "b_key": "b.npy",
         "dest_bucket": "products"}, plus where the objects are, bound on this action by the
        manifest: "store", "store_access_key", "store_secret_key"
Output: {"shape": [200, 150], "bucket": "products",
         "key": "matmul/<sha256 of the product file>.npy", "bytes": 240128,
         "sha256": "<the same digest>"}: the product, float64, written to dest_bucket under
        its own digest (the same inputs always give the same object)
Error:  {"error": "matmul: matrices/a.npy is 3x4 and matrices/b.npy is 5x2: cannot multiply"}
"""

from __future__ import annotations

import ast
import hashlib
import operator
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Any

from owdedup.runtime.config import Settings
from owdedup.runtime.context import ContextCache
from owdedup.runtime.errors import OwdedupError

MAGIC = b"\x93NUMPY"
#: .npy dtype -> array typecode; the product is always float64.
DTYPES = {"<f8": "d", "<f4": "f", "<i8": "q", "<i4": "i"}
MAX_BYTES = 64 * 1024 * 1024
#: Multiply-adds at most (pure Python: ~20 million a second).
MAX_WORK = 200_000_000
_CONTEXTS = ContextCache()  # one store connection per warm container


class BadMatrix(ValueError):
    pass


@dataclass(frozen=True)
class Matrix:
    rows: int
    cols: int
    values: array[float]  # row-major


def main(params: dict[str, Any]) -> dict[str, Any]:
    names = {}
    for side in ("a", "b"):
        bucket, key = params.get(f"{side}_bucket"), params.get(f"{side}_key")
        if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
            return {"error": f"matmul: give {side} as the parameters {side}_bucket and {side}_key"}
        names[side] = (bucket, key)
    dest = params.get("dest_bucket")
    if not isinstance(dest, str) or not dest:
        return {"error": "matmul: give the parameter dest_bucket (where the product goes)"}
    try:
        store = _CONTEXTS.get(Settings.resolve(params)).store
        a, b = (read_npy(store.read_bytes(*names[s], max_bytes=MAX_BYTES), "/".join(names[s]))
                for s in ("a", "b"))
        if a.cols != b.rows:
            raise BadMatrix(f"{'/'.join(names['a'])} is {a.rows}x{a.cols} and "
                            f"{'/'.join(names['b'])} is {b.rows}x{b.cols}: cannot multiply")
        if a.rows * a.cols * b.cols > MAX_WORK:
            raise BadMatrix(f"{a.rows}x{a.cols} times {b.rows}x{b.cols} is more than "
                            f"{MAX_WORK} multiply-adds")
        product = write_npy(multiply(a, b))
        digest = hashlib.sha256(product).hexdigest()
        key = f"matmul/{digest}.npy"
        store.ensure_bucket(dest)
        store.put(dest, key, product, sha256=digest)
    except (OwdedupError, BadMatrix) as exc:
        return {"error": f"matmul: {exc}"}
    return {"shape": [a.rows, b.cols], "bucket": dest, "key": key, "bytes": len(product),
            "sha256": digest}


def multiply(a: Matrix, b: Matrix) -> Matrix:
    columns = [b.values[j::b.cols] for j in range(b.cols)]
    out: array[float] = array("d")
    for i in range(a.rows):
        row = a.values[i * a.cols:(i + 1) * a.cols]
        out.extend(sum(map(operator.mul, row, column)) for column in columns)
    return Matrix(a.rows, b.cols, out)


def read_npy(data: bytes, name: str) -> Matrix:
    """A 2-D matrix from the bytes of an .npy file; BadMatrix naming *name* otherwise."""
    if data[:6] != MAGIC or len(data) < 10:
        raise BadMatrix(f"{name} is not an .npy file")
    try:
        if data[6] == 1:
            (length,), start = struct.unpack_from("<H", data, 8), 10
        elif data[6] in (2, 3):
            (length,), start = struct.unpack_from("<I", data, 8), 12
        else:
            raise BadMatrix(f"{name}: .npy format {data[6]}.{data[7]} is not supported")
        header = ast.literal_eval(data[start:start + length].decode("latin-1"))
    except (struct.error, ValueError, SyntaxError, MemoryError, RecursionError):
        raise BadMatrix(f"{name}: the .npy header cannot be read") from None
    if not isinstance(header, dict):
        raise BadMatrix(f"{name}: the .npy header is not a dictionary")
    descr, shape = header.get("descr"), header.get("shape")
    typecode = DTYPES.get(descr) if isinstance(descr, str) else None
    if typecode is None:
        raise BadMatrix(f"{name}: dtype {descr!r} is not one of {', '.join(DTYPES)}")
    if header.get("fortran_order") is not False:
        raise BadMatrix(f"{name}: only C-order (row-major) matrices are read")
    if not (isinstance(shape, tuple) and len(shape) == 2
            and all(isinstance(n, int) and n > 0 for n in shape)):
        raise BadMatrix(f"{name}: shape {shape!r} is not a 2-D matrix")
    raw: array[Any] = array(typecode)
    body = data[start + length:]
    if len(body) != shape[0] * shape[1] * raw.itemsize:
        raise BadMatrix(f"{name}: {len(body)} bytes of data for a {shape[0]}x{shape[1]} "
                        f"{descr} matrix")
    raw.frombytes(body)
    if sys.byteorder == "big":
        raw.byteswap()
    return Matrix(shape[0], shape[1], array("d", raw))


def write_npy(matrix: Matrix) -> bytes:
    """The .npy 1.0 bytes of a float64 matrix (the header padded to 64 bytes, as NumPy's)."""
    header = (f"{{'descr': '<f8', 'fortran_order': False, "
              f"'shape': ({matrix.rows}, {matrix.cols}), }}")
    padding = -(len(MAGIC) + 4 + len(header) + 1) % 64
    encoded = (header + " " * padding + "\n").encode("latin-1")
    values = array("d", matrix.values)
    if sys.byteorder == "big":
        values.byteswap()
    return MAGIC + b"\x01\x00" + struct.pack("<H", len(encoded)) + encoded + values.tobytes()
