# /// script
# requires-python = ">=3.11"
# dependencies = ["minio", "pillow"]
# ///
"""image-metadata: what an image is, as JSON. A function owdedup did not write, deduplicated by
the conductor image-metadata-dedup that examples/wrapped/manifest.yaml declares beside it.

Input:  {"bucket": "inbucket", "key": "a.jpg"}, plus where the objects are, bound on this
        action by the manifest: "store", "store_access_key", "store_secret_key"
Output: {"format": "JPEG", "mode": "RGB", "width": 640, "height": 480, "bytes": 51234,
         "exif": {"Make": "Canon", "DateTimeOriginal": "2024:05:01 10:00:00", ...},
         "dhash": "8f0e1c3a5b7d9f21"}
        Nothing of the object's name: the same bytes under any name give the same result.
        "dhash" is a 64-bit difference hash (perceptual: a re-encoded or slightly resized
        copy differs in few bits). EXIF values that are not text or numbers (maker notes,
        thumbnails) and the IFD pointers are left out.
Error:  {"error": "image-metadata: inbucket/notes.jpg is not an image: cannot identify ..."},
        {"error": "image-metadata: inbucket/huge.png is too large: 9000x8000 pixels, ..."}
        (more than MAX_PIXELS: refused from its header, before decoding)
"""

from __future__ import annotations

import io
from typing import Any

from owdedup.runtime.config import Settings
from owdedup.runtime.context import ContextCache
from owdedup.runtime.errors import OwdedupError

MAX_BYTES = 64 * 1024 * 1024
#: Largest image decoded (a 50 MP RGB PNG is 150 MB decoded; the action has 256 MB).
MAX_PIXELS = 50_000_000
#: dHash of HASH_SIZE x HASH_SIZE bits.
HASH_SIZE = 8
#: Longest EXIF text kept (a longer one is left out, like binary values).
MAX_TEXT = 512
_POINTERS = (0x8769, 0x8825, 0xA005)  # Exif, GPS and interoperability IFD offsets
_CONTEXTS = ContextCache()  # one store connection per warm container


def main(params: dict[str, Any]) -> dict[str, Any]:
    bucket, key = params.get("bucket"), params.get("key")
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
        return {"error": "image-metadata: give the image as the parameters bucket and key"}
    try:
        store = _CONTEXTS.get(Settings.resolve(params)).store
        data = store.read_bytes(bucket, key, max_bytes=MAX_BYTES)
    except OwdedupError as exc:
        return {"error": f"image-metadata: {bucket}/{key} cannot be read: {exc}"}
    try:
        return describe(data)
    except ValueError as exc:
        return {"error": f"image-metadata: {bucket}/{key} is {exc}"}


def describe(data: bytes) -> dict[str, Any]:
    """The metadata of an encoded image; ValueError ("not an image: ...", "too large:
    ...") when it cannot be described."""
    from PIL import ExifTags, Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            found = {"format": image.format, "mode": image.mode, "width": image.width,
                     "height": image.height}
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(f"too large: {image.width}x{image.height} pixels, more than "
                                 f"{MAX_PIXELS} (the action's memory would not hold it)")
            exif = image.getexif()
            tags = {**exif, **exif.get_ifd(ExifTags.IFD.Exif)}
            # A JPEG is decoded at the smallest scale (down to 1/8) still above the grid:
            # the hash needs 9x8 pixels, not the whole photo in memory.
            image.draft("L", (HASH_SIZE * 8, HASH_SIZE * 8))
            small = image.convert("L").resize((HASH_SIZE + 1, HASH_SIZE),
                                              Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not an image: {exc}") from None
    named = {}
    for tag, value in tags.items():
        plain = _json_value(value)
        if tag not in _POINTERS and plain is not None:
            named[ExifTags.TAGS.get(tag, f"0x{tag:04x}")] = plain
    return {**found, "bytes": len(data), "exif": dict(sorted(named.items())),
            "dhash": _dhash(small.tobytes())}


def _dhash(pixels: bytes) -> str:
    """One bit per horizontally adjacent pair of a (HASH_SIZE+1) x HASH_SIZE grey image: is
    the left one brighter."""
    bits = 0
    width = HASH_SIZE + 1
    for row in range(HASH_SIZE):
        for col in range(HASH_SIZE):
            left, right = pixels[row * width + col], pixels[row * width + col + 1]
            bits = bits << 1 | (left > right)
    return f"{bits:0{HASH_SIZE * HASH_SIZE // 4}x}"


def _json_value(value: Any) -> Any:
    """An EXIF value as JSON (text, number, list of them), or None to leave it out."""
    if isinstance(value, str):
        text = value.rstrip("\x00").strip()
        return text if text and len(text) <= MAX_TEXT and text.isprintable() else None
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return value
    if isinstance(value, tuple):
        items = [_json_value(v) for v in value]
        return items if items and None not in items else None
    try:  # PIL's IFDRational
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if number == number and abs(number) != float("inf") else None
