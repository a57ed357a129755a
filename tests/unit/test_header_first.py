"""The input's header is judged from a bounded prefix before its body is read (issue 8/10).

A 600 MB file of random bytes once cost 664 MB before it was refused as "not an image"; a
large object ended as the platform's out-of-memory error naming no key. The files here are
sparse, so they cost nothing on disk; tracemalloc sees every Python bytes object the read
would allocate.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from owdedup.runtime.context import Context
from owdedup.runtime.errors import BadInputError, StoreError
from owdedup.runtime.job import Job
from owdedup.runtime.pipeline import compute_step, lookup_step
from owdedup.runtime.stores.folder import FolderStore
from owdedup.runtime.thumbnail import HEADER_BYTES, check_header
from tests import imagegen

BIG = 512 << 20  # bytes of the sparse inputs
PEAK_LIMIT = 4 * HEADER_BYTES + (2 << 20)  # the prefix, Pillow's header parse, slack


def _sparse(path: Path, head: bytes, size: int) -> None:
    with path.open("wb") as out:
        out.write(head)
        out.truncate(size)


def _thumbnail_peak(context: Context, key: str, size: int) -> tuple[BadInputError, int]:
    """Run the compute step on photos/*key*; its error and the peak of traced allocations."""
    job = Job("photos", key, dest_bucket="thumbs", params={"sizes": [256]},
              digest="0" * 64, input_bytes=size)
    lookup_step(job, context)
    tracemalloc.start()
    try:
        with pytest.raises(BadInputError) as caught:
            compute_step(job, context)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return caught.value, peak


def test_large_random_file_refused_from_its_prefix(context: Context, store_root: Path) -> None:
    _sparse(store_root / "photos" / "noise.jpg", os.urandom(64 << 10), BIG)
    error, peak = _thumbnail_peak(context, "noise.jpg", BIG)
    assert error.key == "noise.jpg" and str(error).startswith("noise.jpg: not an image")
    assert peak < PEAK_LIMIT, f"{peak / (1 << 20):.1f} MiB traced"
    assert list((store_root / "thumbs").rglob("*")) == []


def test_large_file_with_an_image_header_refused_on_its_budget(
    context: Context, store_root: Path
) -> None:
    # A real JPEG header (and image), then half a gigabyte: its bytes alone exceed the budget.
    _sparse(store_root / "photos" / "padded.jpg", imagegen.jpeg(640, 480), BIG)
    error, peak = _thumbnail_peak(context, "padded.jpg", BIG)
    assert error.key == "padded.jpg"
    assert "over the memory budget of 200 MiB" in str(error)
    assert "512.0 MiB file" in str(error)
    assert peak < PEAK_LIMIT, f"{peak / (1 << 20):.1f} MiB traced"


def test_supported_signature_without_a_header_in_the_prefix(store_root: Path) -> None:
    # A TIFF may keep its directory at the end: with only the signature in the prefix, it is
    # read whole when its bytes fit the budget and refused before reading when they do not.
    tiff = imagegen.tiff()
    prefix = tiff[:8] + b"\0" * 64  # the signature and an IFD offset past the prefix
    check_header(prefix, 10 << 20, [256], name="k.tif")
    with pytest.raises(BadInputError, match="no readable image header"):
        check_header(prefix, 300 << 20, [256], name="k.tif")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (imagegen.bomb_png(8000, 8000), "over the limit of 50000000"),
        (imagegen.bomb_png(7000, 7000, mode="RGBA"), "memory budget"),
        (imagegen.not_an_image(), "not an image"),
        (imagegen.unsupported("PPM"), "unsupported image format PPM"),
        (b"", "empty object"),
    ],
    ids=["pixels", "memory", "text", "ppm", "empty"],
)
def test_header_refusals_match_the_full_check(data: bytes, message: str) -> None:
    with pytest.raises(BadInputError, match=message) as caught:
        check_header(data[:HEADER_BYTES], len(data), [256], name="x")
    assert caught.value.key == "x"


def test_whole_photo_header_accepted() -> None:
    data = imagegen.jpeg(900, 600, progressive=True)
    check_header(data[:4096], len(data), [256, 64], name="x")


# -- the stores' bounded reads ----------------------------------------------------------------


def test_folder_store_read_prefix_and_bounded_read(store_root: Path) -> None:
    store = FolderStore(store_root)
    store.put("photos", "a.bin", b"0123456789")
    store.put("photos", "empty.bin", b"")
    assert store.read_prefix("photos", "a.bin", 4) == b"0123"
    assert store.read_prefix("photos", "a.bin", 100) == b"0123456789"
    assert store.read_prefix("photos", "empty.bin", 4) == b""
    assert store.read_bytes("photos", "a.bin", max_bytes=10) == b"0123456789"
    with pytest.raises(StoreError, match="more than the 9 bytes expected"):
        store.read_bytes("photos", "a.bin", max_bytes=9)


def test_folder_store_read_prefix_refuses_a_link_as_open_does(
    store_root: Path, tmp_path: Path
) -> None:
    # read_prefix goes through the store's own open(), with its checks.
    secret = tmp_path / "secret"
    secret.write_bytes(b"root:x:0:0:secret")
    (store_root / "photos" / "link.jpg").symlink_to(secret)
    store = FolderStore(store_root)
    with pytest.raises(BadInputError, match="symbolic link"):
        store.read_prefix("photos", "link.jpg", 4)
