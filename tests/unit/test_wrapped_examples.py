"""The example functions of ``examples/wrapped`` (issue 10, item 8), run as the runtime calls
them (``main(params)``) on a folder store: their results, and their refusals naming the
object. Deployed and deduplicated through serve: tests/services/test_wrapped_deploy.py."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy
import pytest
from PIL import Image

from tests.conftest import PROJECT
from tests.imagegen import CAMERA_MAKE, bomb_png, jpeg, not_an_image, picture


def load(name: str) -> ModuleType:
    path = PROJECT / "examples" / "wrapped" / "actions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


matmul = load("matmul")
image_metadata = load("image_metadata")


def npy(matrix: Any) -> bytes:
    buffer = io.BytesIO()
    numpy.save(buffer, matrix)
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "in").mkdir()
    return {"store": tmp_path.as_uri(), "root": tmp_path}


def put(store: dict[str, Any], key: str, data: bytes) -> None:
    (store["root"] / "in" / key).write_bytes(data)


@pytest.mark.parametrize("dtype", ["<f8", "<f4", "<i8", "<i4"])
def test_npy_files_numpy_writes_are_read_and_the_product_is_numpys(dtype: str) -> None:
    rng = numpy.random.default_rng(1)
    a = (rng.random((7, 5)) * 10).astype(dtype)
    b = (rng.random((5, 3)) * 10).astype(dtype)
    product = matmul.multiply(matmul.read_npy(npy(a), "a"), matmul.read_npy(npy(b), "b"))
    written = numpy.load(io.BytesIO(matmul.write_npy(product)))
    assert written.dtype == numpy.float64 and written.shape == (7, 3)
    assert numpy.allclose(written, a.astype("<f8") @ b.astype("<f8"))


@pytest.mark.parametrize("data, expected", [
    (b"a,b\n1,2\n", "m.npy is not an .npy file"),
    (npy(numpy.zeros((2, 2), dtype=">f8")), "dtype '>f8' is not one of"),
    (npy(numpy.asfortranarray(numpy.ones((2, 3)))), "only C-order"),
    (npy(numpy.zeros((2, 2, 2))), "is not a 2-D matrix"),
    (npy(numpy.zeros((3, 3)))[:-8], "bytes of data for a 3x3"),
])
def test_a_bad_matrix_is_refused_naming_it(data: bytes, expected: str) -> None:
    with pytest.raises(matmul.BadMatrix, match=expected):
        matmul.read_npy(data, "m.npy")


def test_matmul_writes_the_product_under_its_digest(store: dict[str, Any]) -> None:
    a, b = numpy.arange(6.0).reshape(2, 3), numpy.arange(12.0).reshape(3, 4)
    put(store, "a.npy", npy(a))
    put(store, "b.npy", npy(b))
    call = {"store": store["store"], "a_bucket": "in", "a_key": "a.npy", "b_bucket": "in",
            "b_key": "b.npy", "dest_bucket": "out"}
    result = matmul.main(call)
    assert result["shape"] == [2, 4] and result["bucket"] == "out"
    assert result["key"] == f"matmul/{result['sha256']}.npy"
    stored = (store["root"] / "out" / result["key"]).read_bytes()
    assert numpy.array_equal(numpy.load(io.BytesIO(stored)), a @ b)
    assert matmul.main(call) == result  # a pure function: the same object again

    refused = matmul.main({**call, "b_key": "a.npy"})
    assert refused == {"error": "matmul: in/a.npy is 2x3 and in/a.npy is 2x3: cannot multiply"}
    assert "a_key" in matmul.main({k: v for k, v in call.items() if k != "a_key"})["error"]
    missing = matmul.main({**call, "a_key": "gone.npy"})["error"]
    assert missing.startswith("matmul: ") and "gone.npy" in missing


def test_image_metadata_describes_the_image_and_its_exif(store: dict[str, Any]) -> None:
    put(store, "a.jpg", jpeg(320, 200, exif_gps=True))
    result = image_metadata.main({"store": store["store"], "bucket": "in", "key": "a.jpg"})
    assert (result["format"], result["mode"], result["width"], result["height"]) == (
        "JPEG", "RGB", 320, 200)
    assert result["exif"]["Make"] == CAMERA_MAKE
    assert "ExifOffset" not in result["exif"] and "GPSInfo" not in result["exif"]
    assert len(result["dhash"]) == 16 and "a.jpg" not in str(result)


def test_the_difference_hash_is_perceptual() -> None:
    card = picture(400, 300)

    def encoded(image: Any, **options: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, **options)
        return buffer.getvalue()

    original = image_metadata.describe(encoded(card, format="JPEG", quality=95))["dhash"]
    smaller = image_metadata.describe(
        encoded(card.resize((200, 150)), format="PNG"))["dhash"]
    noise = Image.effect_noise((400, 300), 80).convert("RGB")
    other = image_metadata.describe(encoded(noise, format="JPEG"))["dhash"]

    def distance(x: str, y: str) -> int:
        return bin(int(x, 16) ^ int(y, 16)).count("1")

    assert distance(original, smaller) <= 6  # re-encoded and resized: nearly the same hash
    assert distance(original, other) > 16


def test_image_metadata_refuses_what_is_not_an_image_naming_it(store: dict[str, Any]) -> None:
    put(store, "notes.jpg", not_an_image())
    refused = image_metadata.main({"store": store["store"], "bucket": "in", "key": "notes.jpg"})
    assert refused["error"].startswith("image-metadata: in/notes.jpg is not an image: ")
    gone = image_metadata.main({"store": store["store"], "bucket": "in", "key": "gone.jpg"})
    assert gone["error"].startswith("image-metadata: in/gone.jpg cannot be read: ")
    assert "bucket and key" in image_metadata.main({"bucket": "in"})["error"]


def test_an_image_too_large_to_decode_is_refused_from_its_header(
    store: dict[str, Any],
) -> None:
    put(store, "huge.png", bomb_png(9000, 8000))  # 72 MP in its header, a few bytes of body
    refused = image_metadata.main({"store": store["store"], "bucket": "in", "key": "huge.png"})
    assert refused == {"error": "image-metadata: in/huge.png is too large: 9000x8000 pixels, "
                                "more than 50000000 (the action's memory would not hold it)"}
