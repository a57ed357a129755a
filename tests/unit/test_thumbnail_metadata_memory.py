"""Metadata Pillow holds outside the pixels counts against the memory budget (issue 8/9).

The estimate must stay an upper bound for what a hostile file can make the decoder hold: a
64 KiB PNG of zTXt chunks made Pillow inflate 65 MiB of text while the estimate said 9 MiB,
and a JPEG's APP segments are copied once more into ``applist`` (50 MiB of them took 50 MiB
beyond the file) where the estimate counted the file only once.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from owdedup.runtime.errors import BadInputError
from owdedup.runtime.thumbnail import make_thumbnails
from tests import imagegen

MIB = 1 << 20


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_with_text(text_bytes: int) -> bytes:
    """A 64x64 PNG with zTXt chunks that inflate to about *text_bytes* (each under Pillow's
    1 MiB per-chunk cap), a few kB on disk."""
    data = imagegen.png(64, 64)
    per_chunk = MIB - 64
    payload = zlib.compress(b"a" * per_chunk, 9)
    chunks = b"".join(_chunk(b"zTXt", b"k%d\x00\x00" % i + payload)
                      for i in range(max(1, text_bytes // per_chunk)))
    header_end = 8 + 25  # signature + IHDR
    return data[:header_end] + chunks + data[header_end:]


def _jpeg_with_app_segments(app_bytes: int) -> bytes:
    data = imagegen.jpeg(64, 64)
    segment = b"\xff\xe5" + struct.pack(">H", 0xFFFF) + b"x" * 0xFFFD
    return data[:2] + segment * (app_bytes // len(segment)) + data[2:]


def test_png_text_bomb_is_refused_not_inflated() -> None:
    data = _png_with_text(48 * MIB)
    assert len(data) < 256 * 1024
    with pytest.raises(BadInputError, match="text chunks") as caught:
        make_thumbnails(data, [64], max_memory_mb=40, name="bomb.png")
    assert caught.value.key == "bomb.png"


def test_png_with_ordinary_text_still_thumbnails() -> None:
    data = _png_with_text(2 * MIB)  # far more than an editor's XMP packet
    [thumb] = make_thumbnails(data, [32], name="ok.png")
    assert Image.open(io.BytesIO(thumb.data)).size == (32, 32)


def test_jpeg_app_segments_count_twice_against_the_budget() -> None:
    # 10 MiB of APP segments: the file plus Pillow's copy is ~20 MiB with the fixed
    # allowance (8 MiB) over a 25 MiB budget; counted once, the estimate said ~20 MiB.
    data = _jpeg_with_app_segments(10 * MIB)
    with pytest.raises(BadInputError, match="memory budget"):
        make_thumbnails(data, [64], max_memory_mb=25, name="stuffed.jpg")
    [thumb] = make_thumbnails(data, [64], max_memory_mb=40, name="stuffed.jpg")
    assert thumb.width == 64
