"""The bytecode and the zip itself, both reproducible: the same files give the same bytes.

Bytecode: OpenWhisk unpacks the zip into a fresh folder for every new container and the
runtime compiles nothing, so without ``.pyc`` files each cold start compiles every module it
imports. The zips carry ``__pycache__/*.cpython-311.pyc`` compiled by this (CPython 3.11)
interpreter in a clean subprocess, checked-hash based (:data:`PYC_INVALIDATION`): unzipping
does not keep timestamps, so timestamp-based ones would be recompiled. They are compiled with
``-X no_debug_ranges``: without the column ranges of every instruction the bytecode is about
a quarter smaller (and so the zips: the hash zip by about 90 kB); tracebacks still name the file
and line, only without the ``^^^`` markers under the failing expression.

The zip (:func:`write_zip`): entries are sorted, timestamps fixed at 1980-01-01, permissions
fixed, fixed compression.
"""

from __future__ import annotations

import base64
import json
import os
import py_compile
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO, Final

from owdedup.deploy.runtime import RUNTIME_KIND, RUNTIME_PYTHON, BuildError
from owdedup.runtime.atomic import write_atomic

#: The bytecode shipped: checked against a hash of the source (not its timestamp, which the
#: unpacked zip does not keep). Checking costs a read and a SipHash of each source file per
#: import; unchecked would skip that but run stale bytecode if a source were ever edited.
PYC_INVALIDATION: Final = py_compile.PycInvalidationMode.CHECKED_HASH
PYC_TAG: Final = "cpython-311"

ZIP_DATE: Final = (1980, 1, 1, 0, 0, 0)
ZIP_LEVEL: Final = 6


def _mode(arcname: str) -> int:
    """0o755 for shared libraries (``x.so``, ``libz.so.1``), 0o644 for everything else."""
    name = arcname.rsplit("/", 1)[-1]
    return 0o755 if name.endswith(".so") or ".so." in name else 0o644


#: Run by the build interpreter with ``-I -S`` and a fixed hash seed, so the bytecode depends
#: on the sources only: reads ``[[name, base64 source], ...]`` (JSON) on stdin, writes
#: ``[base64 pyc, ...]``. A hash-based pyc as importlib writes one: magic, flags (bit 0:
#: hash-based, bit 1: check the source), SipHash of the source, marshalled code.
_COMPILER = r"""
import base64, importlib.util, json, marshal, sys
flags = int(sys.argv[1])
out = []
for name, encoded in json.load(sys.stdin):
    source = base64.b64decode(encoded)
    code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    data = importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
    data += importlib.util.source_hash(source) + marshal.dumps(code)
    out.append(base64.b64encode(data).decode("ascii"))
json.dump([sys.implementation.cache_tag, out], sys.stdout)
"""


def check_build_python() -> None:
    """The bytecode is this interpreter's: it must be the runtime's CPython minor version."""
    version = ".".join(map(str, sys.version_info[:2]))
    if sys.implementation.name != "cpython" or version != RUNTIME_PYTHON:
        raise BuildError(
            f"the zips carry bytecode for CPython {RUNTIME_PYTHON} ({RUNTIME_KIND}); build "
            f"them with CPython {RUNTIME_PYTHON}, not {sys.implementation.name} {version}"
        )


def pyc_name(name: str) -> str:
    """``pkg/mod.py`` -> ``pkg/__pycache__/mod.cpython-311.pyc``."""
    folder, _, file = name.rpartition("/")
    pyc = f"__pycache__/{file.removesuffix('.py')}.{PYC_TAG}.pyc"
    return f"{folder}/{pyc}" if folder else pyc


def compile_bytecode(files: Mapping[str, bytes], *,
                     mode: py_compile.PycInvalidationMode = PYC_INVALIDATION) -> dict[str, bytes]:
    """Hash-based bytecode of every ``.py`` in *files* but ``__main__.py`` (which the runtime
    renames): pyc archive name -> content. Each code object is compiled with its archive name
    as its file name (importlib replaces it with the real path on import)."""
    check_build_python()
    if mode is py_compile.PycInvalidationMode.TIMESTAMP:
        raise BuildError("timestamp-based bytecode is ignored once the zip is unpacked")
    flags = 0b01 | (0b10 if mode is py_compile.PycInvalidationMode.CHECKED_HASH else 0)
    sources = sorted((name, content) for name, content in files.items()
                     if name.endswith(".py") and name != "__main__.py")
    request = json.dumps([[name, base64.b64encode(content).decode("ascii")]
                          for name, content in sources])
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "no_debug_ranges", "-c", _COMPILER, str(flags)],
        input=request, capture_output=True, text=True, check=False,
        env={"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")},
    )
    if done.returncode != 0:
        raise BuildError(f"compiling the bytecode failed:\n{done.stderr[-3000:]}")
    tag, compiled = json.loads(done.stdout)
    if tag != PYC_TAG or len(compiled) != len(sources):
        raise BuildError(f"the compiler answered {tag} with {len(compiled)} of "
                         f"{len(sources)} files; expected {PYC_TAG}")
    return {pyc_name(name): base64.b64decode(data)
            for (name, _), data in zip(sources, compiled, strict=True)}


def write_zip(path: Path, files: Mapping[str, bytes], folders: Iterable[str] = ()) -> None:
    """Write *files* (and the empty *folders*) as a reproducible zip: sorted entries with
    their folders, 1980-01-01 timestamps, 0o644 files (0o755 folders and shared libraries),
    deflate level 6."""
    folders = {
        "/".join(parts[:depth]) + "/"
        for name in [*files, *(f"{folder.rstrip('/')}/" for folder in folders)]
        for parts in [name.split("/")[:-1]]
        for depth in range(1, len(parts) + 1)
    }
    entries: list[tuple[str, bytes | None]] = [(d, None) for d in folders]
    entries += list(files.items())
    entries.sort(key=lambda entry: entry[0])
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(out: BinaryIO) -> None:
        with zipfile.ZipFile(out, "w") as archive:
            for name, content in entries:
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                info.create_system = 3  # Unix: the permission bits below are honoured
                if content is None:
                    info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
                    archive.writestr(info, b"", compress_type=zipfile.ZIP_STORED)
                else:
                    info.external_attr = (stat.S_IFREG | _mode(name)) << 16
                    archive.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED,
                                     compresslevel=ZIP_LEVEL)

    write_atomic(path, write, mode=0o666)
