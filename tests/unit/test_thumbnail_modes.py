"""Every input colour mode and transparency kind against a reference rendering.

"It decodes" is not enough: a 16-bit grey PNG with a transparency key once came out all black.
The reference is computed independently of the thumbnail code, with numpy where Pillow's own
conversion would clip (16- and 32-bit grey) and with Pillow's ``convert("RGBA")`` otherwise:
the full-size image as RGBA, flattened onto white, resized to the thumbnail's size with
LANCZOS. The thumbnail (flattened onto white the same way when it keeps an alpha channel) must
match it within a small mean absolute difference.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from owdedup.runtime.thumbnail import make_thumbnails
from tests import imagegen

WIDTH, HEIGHT = 360, 240
BOX = 96
# Mean absolute difference per channel, 0-255, of the thumbnail against the reference. The
# two resize differently (reduce() then the function's filter against LANCZOS from full
# size): measured at most ~3 on these images; anything structurally wrong (black, lost
# alpha, clipped 16-bit values) is > 40.
TOLERANCE = 4.0
JPEG_TOLERANCE = 6.0  # the output's own compression on top


def _card(mode: str) -> Image.Image:
    return imagegen.picture(WIDTH, HEIGHT, mode)


def _keyed(mode: str) -> Image.Image:
    """The card in *mode* with its right half painted in the key colour (declared below)."""
    image = _card(mode)
    # An image, not a bare value: paste() fills I;16 with a value's low byte twice.
    image.paste(Image.new(mode, (WIDTH - WIDTH // 2, HEIGHT), _KEY[mode]), (WIDTH // 2, 0))
    image.info["transparency"] = _KEY[mode]
    return image


_KEY: dict[str, int | tuple[int, int, int]] = {
    "L": 7, "RGB": (1, 2, 3), "I;16": 1234, "I": 1234, "1": 0,
}


def _grey32(mode: str) -> Image.Image:
    """Mode I or F: the 16-bit card's values as 32-bit integers or floats."""
    return _card("I;16").convert(mode)


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    if "transparency" in image.info and "transparency" not in options:
        options["transparency"] = image.info["transparency"]
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _pa() -> Image.Image:
    palette = _card("P")
    alpha = imagegen.transparency_mask(WIDTH, HEIGHT)
    palette.info.pop("transparency", None)
    pa = palette.convert("PA")
    pa.putalpha(alpha)
    return pa


# id -> bytes of an image in that mode / with that transparency (all WIDTH x HEIGHT)
CASES: dict[str, Callable[[], bytes]] = {
    "png-1": lambda: _save(_card("1"), "PNG"),
    "png-1-key": lambda: _save(_keyed("1"), "PNG"),
    "png-L": lambda: _save(_card("L"), "PNG"),
    "png-L-key": lambda: _save(_keyed("L"), "PNG"),
    "png-LA": lambda: _save(_card("LA"), "PNG"),
    "png-P": lambda: _save(_card("RGB").quantize(200), "PNG"),
    "png-P-trns": lambda: _save(_card("P"), "PNG"),
    "png-RGB": lambda: _save(_card("RGB"), "PNG"),
    "png-RGB-key": lambda: _save(_keyed("RGB"), "PNG"),
    "png-RGBA": lambda: _save(_card("RGBA"), "PNG"),
    "png-I16": lambda: _save(_card("I;16"), "PNG"),
    "png-I16-key": lambda: _save(_keyed("I;16"), "PNG"),
    "gif-P": lambda: imagegen.gif(WIDTH, HEIGHT, transparency=False),
    "gif-P-trns": lambda: imagegen.gif(WIDTH, HEIGHT),
    "gif-L-trns": lambda: _save(_keyed("L"), "GIF"),
    "tiff-1": lambda: _save(_card("1"), "TIFF"),
    "tiff-L": lambda: _save(_card("L"), "TIFF"),
    "tiff-LA": lambda: _save(_card("LA"), "TIFF"),
    "tiff-P": lambda: _save(_card("RGB").quantize(200), "TIFF"),
    "tiff-PA": lambda: _save(_pa(), "TIFF"),
    "tiff-I16": lambda: _save(_card("I;16"), "TIFF"),
    "tiff-I": lambda: _save(_grey32("I"), "TIFF"),
    "tiff-F": lambda: _save(_grey32("F"), "TIFF"),
    "tiff-RGB": lambda: _save(_card("RGB"), "TIFF"),
    "tiff-RGBA": lambda: _save(_card("RGBA"), "TIFF"),
    "tiff-I16B": lambda: _save(_card("I;16").convert("I;16B"), "TIFF"),
    "tiff-CMYK": lambda: _save(_card("CMYK"), "TIFF"),
    "tiff-YCbCr": lambda: _save(_card("RGB").convert("YCbCr"), "TIFF"),
    "tiff-LAB": lambda: _save(_card("RGB").convert("LAB"), "TIFF"),
    "bmp-1": lambda: _save(_card("1"), "BMP"),
    "bmp-L": lambda: _save(_card("L"), "BMP"),
    "bmp-P": lambda: _save(_card("RGB").quantize(200), "BMP"),
    "bmp-RGB": lambda: _save(_card("RGB"), "BMP"),
    "webp-RGB": lambda: _save(_card("RGB"), "WEBP", lossless=True),
    "webp-RGBA": lambda: _save(_card("RGBA"), "WEBP", lossless=True),
    "jpeg-L": lambda: _save(_card("L"), "JPEG", quality=95),
    "jpeg-RGB": lambda: _save(_card("RGB"), "JPEG", quality=95),
    "jpeg-CMYK": lambda: _save(_card("CMYK"), "JPEG", quality=95),
}


def _wide_grey(image: Image.Image) -> Image.Image:
    """16- or 32-bit grey to RGBA with numpy: values scaled (not clipped) to 8 bits; the
    transparency key, if any, tested on the original values."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        grey = np.clip(values, 0, 255)  # F holds 0-255 floats by convention
    else:
        grey = values / 256.0 if values.max() > 255 or image.mode.startswith("I;16") else values
    alpha = np.full(values.shape, 255.0)
    if "transparency" in image.info:
        alpha[values == image.info["transparency"]] = 0.0
    grey8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    planes = [grey8, grey8, grey8, alpha.astype(np.uint8)]
    return Image.fromarray(np.dstack(planes), "RGBA")


def reference(data: bytes, size: tuple[int, int]) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        rgba = _wide_grey(image)
    else:
        rgba = image.convert("RGBA")
    return _flattened(rgba).resize(size, Image.Resampling.LANCZOS)


def _flattened(image: Image.Image) -> Image.Image:
    """*image* composed onto white, as RGB."""
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")


def thumbnail(data: bytes, fmt: str) -> Image.Image:
    [thumb] = make_thumbnails(data, [BOX], fmt=fmt, name="modes/x")
    image = Image.open(io.BytesIO(thumb.data))
    image.load()
    return image


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_thumbnail_matches_reference_rendering(case: str, fmt: str) -> None:
    data = CASES[case]()
    got = thumbnail(data, fmt)
    expected = reference(data, got.size)
    difference = float(np.abs(
        np.asarray(_flattened(got), dtype=np.float64) - np.asarray(expected, dtype=np.float64)
    ).mean())
    limit = TOLERANCE if fmt == "png" else JPEG_TOLERANCE
    assert difference <= limit, f"{case} -> {fmt}: mean abs difference {difference:.1f}"
