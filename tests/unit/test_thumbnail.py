"""The thumbnail function: sizes, orientation, colour modes, output formats, metadata, bad input.

All images are generated in memory by ``tests.imagegen``.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from PIL import Image, ImageChops

from owdedup.runtime import functions
from owdedup.runtime.errors import BadInputError
from owdedup.runtime.functions import DEFAULT_MAX_MEMORY_MB
from owdedup.runtime.thumbnail import (
    HEADER_BYTES,
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    Thumbnail,
    check_header,
    estimate_memory,
    make_thumbnails,
)
from tests import imagegen

NAME = "photos/x.jpg"
PILLOW_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
FORMATS = sorted(OUTPUT_FORMATS)


def decode(thumb: Thumbnail) -> Image.Image:
    image = Image.open(io.BytesIO(thumb.data))
    image.load()
    return image


def one(data: bytes, size: int = 64, fmt: str = "png", **options: object) -> Image.Image:
    """The decoded thumbnail of *data* for a single box (lossless PNG unless told)."""
    thumbs = make_thumbnails(data, [size], fmt=fmt, name=NAME, **options)  # type: ignore[arg-type]
    assert len(thumbs) == 1
    image = decode(thumbs[0])
    assert image.size == (thumbs[0].width, thumbs[0].height)
    return image


def expected_fit(width: int, height: int, box: int) -> tuple[int, int]:
    """The largest size within box x box with the aspect ratio of width x height.

    Never upscales. The long side becomes *box*; the short side is the exact proportional
    length rounded down or up, whichever keeps the aspect ratio closer (at least 1 px).
    """
    if width <= box and height <= box:
        return width, height
    long_side, short_side = max(width, height), min(width, height)
    exact = short_side * box / long_side
    aspect = long_side / short_side
    candidates = {max(math.floor(exact), 1), max(math.ceil(exact), 1)}
    short = min(candidates, key=lambda n: abs(aspect - box / n))
    return (box, short) if width >= height else (short, box)


def pixel(image: Image.Image, fx: float, fy: float) -> tuple[int, ...]:
    """The pixel at fractions (fx, fy) of the width and height, always as a tuple."""
    value = image.getpixel((round(fx * (image.width - 1)), round(fy * (image.height - 1))))
    assert value is not None
    return value if isinstance(value, tuple) else (int(value),)


def grey_spread(image: Image.Image) -> int:
    """The largest difference between colour channels anywhere (0 for a pure grey image)."""
    if image.mode in ("L", "LA"):
        return 0
    r, g, b = image.convert("RGB").split()
    spreads: list[int] = []
    for one_band, other in ((r, g), (g, b)):
        high = ImageChops.difference(one_band, other).getextrema()[1]
        assert isinstance(high, int)
        spreads.append(high)
    return max(spreads)


# ---------------------------------------------------------------------------------------------
# Sizes


def test_expected_fit_matches_hand_computation() -> None:
    # 300x200 into 64: the exact height is 42.67. 64/43 = 1.488 is nearer the 1.5 aspect ratio
    # than 64/42 = 1.524, so 43.
    assert expected_fit(300, 200, 64) == (64, 43)
    assert expected_fit(200, 300, 64) == (43, 64)
    assert expected_fit(40, 30, 64) == (40, 30)


@pytest.mark.parametrize(
    ("width", "height", "box"),
    [
        (300, 200, 64),
        (200, 300, 64),
        (300, 200, 100),
        (640, 480, 256),
        (256, 256, 100),
        (301, 199, 150),
        (2000, 3, 64),  # extreme panorama: the short side stays at least 1 px
        (3, 2000, 64),
    ],
)
@pytest.mark.parametrize("source", ["jpeg", "png"])
def test_fits_box_keeping_aspect_ratio(width: int, height: int, box: int, source: str) -> None:
    data = imagegen.jpeg(width, height) if source == "jpeg" else imagegen.png(width, height)
    [thumb] = make_thumbnails(data, [box], fmt="png")
    assert thumb.size == box
    assert (thumb.width, thumb.height) == expected_fit(width, height, box)
    assert decode(thumb).size == (thumb.width, thumb.height)


@pytest.mark.parametrize("fmt", FORMATS)
def test_never_upscales(fmt: str) -> None:
    thumbs = make_thumbnails(imagegen.jpeg(40, 30), [16, 64, 512], fmt=fmt)
    assert [t.size for t in thumbs] == [512, 64, 16]
    assert [(t.width, t.height) for t in thumbs] == [(40, 30), (40, 30), (16, 12)]
    assert decode(thumbs[0]).size == (40, 30)


@pytest.mark.parametrize("source", ["jpeg", "png"])
def test_several_sizes_largest_first_each_fitting(source: str) -> None:
    data = imagegen.jpeg(900, 600) if source == "jpeg" else imagegen.png(900, 600)
    thumbs = make_thumbnails(data, [16, 256, 64], fmt="jpeg")
    assert [t.size for t in thumbs] == [256, 64, 16]
    for thumb in thumbs:
        exact = 600 * thumb.size / 900
        assert thumb.width == thumb.size
        assert abs(thumb.height - exact) < 1, (thumb.size, thumb.height, exact)
        assert decode(thumb).size == (thumb.width, thumb.height)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("source", ["jpeg", "png"])
def test_each_size_depends_only_on_its_chain(fmt: str, source: str) -> None:
    """The records of a size are shared by every request with the same sizes above it
    (functions.ThumbnailFunction.variants): the bytes must not depend on smaller sizes."""
    data = imagegen.jpeg(900, 600) if source == "jpeg" else imagegen.png(900, 600)
    sizes = [16, 64, 256]
    by_size = {t.size: t for t in make_thumbnails(data, sizes, fmt=fmt)}
    for size in sizes:
        chain = [s for s in sizes if s >= size]
        alone = make_thumbnails(data, chain, fmt=fmt)
        assert alone[-1].size == size
        assert alone[-1].data == by_size[size].data, f"size {size} from chain {chain}"


@pytest.mark.parametrize("source", ["jpeg", "jpeg-progressive", "png"])
def test_same_pixels_as_the_plain_pillow_loop(source: str) -> None:
    """At equal settings the function's pixels are the plain loop's: ``thumbnail`` with
    Pillow's defaults (BICUBIC, reducing gap 2), each smaller size from the one above. The
    filter was chosen by measurement (README); the benchmarks compare equal work."""
    data = {"jpeg": lambda: imagegen.jpeg(1800, 1200),
            "jpeg-progressive": lambda: imagegen.jpeg(1800, 1200, progressive=True),
            "png": lambda: imagegen.png(1800, 1200)}[source]()
    sizes = [512, 256, 64, 16]
    plain: Image.Image = Image.open(io.BytesIO(data))
    expected: list[bytes] = []
    for size in sizes:
        plain = plain.copy() if expected else plain
        plain.thumbnail((size, size))
        expected.append(plain.convert("RGB").tobytes())
    ours = [decode(t).convert("RGB").tobytes() for t in make_thumbnails(data, sizes, fmt="png")]
    assert ours == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_deterministic_and_order_insensitive(fmt: str) -> None:
    data = imagegen.jpeg(600, 400, orientation=6)
    first = make_thumbnails(data, [32, 128, 256], fmt=fmt)
    again = make_thumbnails(data, [32, 128, 256], fmt=fmt)
    shuffled = make_thumbnails(data, [128, 32, 256, 32], fmt=fmt)
    assert [t.data for t in first] == [t.data for t in again] == [t.data for t in shuffled]
    assert first == again


def test_quality_is_used_for_lossy_formats_only() -> None:
    data = imagegen.jpeg(600, 400)
    for fmt in ("jpeg", "webp"):
        low = make_thumbnails(data, [256], fmt=fmt, quality=20)[0]
        high = make_thumbnails(data, [256], fmt=fmt, quality=95)[0]
        assert len(low.data) < len(high.data), fmt
    assert make_thumbnails(data, [64], fmt="jpeg", quality=None)[0].data
    png_low = make_thumbnails(data, [64], fmt="png", quality=20)[0]
    png_high = make_thumbnails(data, [64], fmt="png", quality=95)[0]
    assert png_low.data == png_high.data


# ---------------------------------------------------------------------------------------------
# Orientation


def test_marker_helper_sees_the_stored_layout() -> None:
    stored = Image.open(io.BytesIO(imagegen.jpeg(orientation=6)))
    assert stored.size == (300, 200)
    assert imagegen.marker_corner(stored) == "top-left"


@pytest.mark.parametrize("box", [64, 512])  # 512: no reduction at all, only the transposition
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(orientation: int, box: int) -> None:
    image = one(imagegen.jpeg(300, 200, orientation=orientation), box)
    landscape = expected_fit(300, 200, box)
    portrait = orientation >= 5
    assert image.size == (landscape[::-1] if portrait else landscape)
    assert imagegen.marker_corner(image) == imagegen.ORIENTED_CORNER[orientation]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orientation_in_every_output_format(orientation: int, fmt: str) -> None:
    image = one(imagegen.jpeg(300, 200, orientation=orientation), 64, fmt)
    assert image.size == ((43, 64) if orientation in (6, 8) else (64, 43))
    assert imagegen.marker_corner(image) == imagegen.ORIENTED_CORNER[orientation]


def test_orientation_applies_to_every_size() -> None:
    thumbs = make_thumbnails(imagegen.jpeg(900, 600, orientation=6), [32, 128, 256], fmt="png")
    for thumb in thumbs:
        image = decode(thumb)
        assert image.height == thumb.size > image.width
        assert imagegen.marker_corner(image) == "top-right"


@pytest.mark.parametrize(
    "make",
    [
        lambda o: imagegen.png(orientation=o),
        lambda o: imagegen.webp(orientation=o, lossless=True),
        lambda o: imagegen.tiff(orientation=o),
        lambda o: imagegen.tiff(orientation=o, compression="tiff_lzw"),
    ],
    ids=["png-exif", "webp-exif", "tiff-tag", "tiff-lzw-tag"],
)
@pytest.mark.parametrize("box", [64, 512])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orientation_of_other_containers(
    make: Callable[[int], bytes], orientation: int, box: int
) -> None:
    # Pillow applies a TIFF's orientation itself while decoding; it must not be applied twice.
    image = one(make(orientation), box)
    landscape = expected_fit(300, 200, box)
    assert image.size == (landscape[::-1] if orientation in (6, 8) else landscape)
    assert imagegen.marker_corner(image) == imagegen.ORIENTED_CORNER[orientation]


@pytest.mark.parametrize("orientation", [0, 9, 1000])
def test_invalid_orientation_is_ignored(orientation: int) -> None:
    image = one(imagegen.jpeg(orientation=orientation))
    assert image.size == (64, 43)
    assert imagegen.marker_corner(image) == "top-left"


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_unreadable_exif_is_not_fatal() -> None:
    image = one(imagegen.corrupt_exif(imagegen.jpeg()))
    assert image.size == (64, 43)


# ---------------------------------------------------------------------------------------------
# Input formats and colour modes


@pytest.mark.parametrize(
    "data",
    [
        imagegen.jpeg(),
        imagegen.png(),
        imagegen.webp(),
        imagegen.gif(transparency=False),
        imagegen.tiff(),
        imagegen.tiff(compression="jpeg"),
        imagegen.bmp(),
        imagegen.mpo(),
    ],
    ids=["jpeg", "png", "webp", "gif", "tiff", "tiff-jpeg", "bmp", "mpo"],
)
def test_supported_input_formats(data: bytes) -> None:
    image = one(data)
    assert image.size == (64, 43)
    assert imagegen.marker_corner(image) == "top-left"


@pytest.mark.parametrize("fmt", FORMATS)
def test_cmyk_jpeg_becomes_rgb(fmt: str) -> None:
    image = one(imagegen.jpeg(mode="CMYK"), 64, fmt)
    assert image.mode == "RGB"
    assert imagegen.marker_corner(image) == "top-left"  # red stays red: channels not inverted
    assert pixel(image, 0.95, 0.05)[:3] == pytest.approx((0, 255, 0), abs=40)  # green corner


def test_cmyk_jpeg_is_oriented_too() -> None:
    image = one(imagegen.jpeg(mode="CMYK", orientation=6))
    assert image.size == (43, 64)
    assert imagegen.marker_corner(image) == "top-right"


ALPHA_SOURCES = {
    "png-rgba": lambda: imagegen.png(mode="RGBA"),
    "png-palette-trns": lambda: imagegen.png(mode="P"),
    "png-la": lambda: imagegen.png(mode="LA"),
    "png-rgb-colour-key": lambda: imagegen.png(mode="RGB", colour_key=True),
    "png-l-colour-key": lambda: imagegen.png(mode="L", colour_key=True),
    "gif-transparent": lambda: imagegen.gif(),
    "webp-rgba": lambda: imagegen.webp(mode="RGBA", lossless=True),
}
# Sample points: the left half of the alpha sources is opaque, the right half transparent.
OPAQUE_POINT = (0.1, 0.75)
TRANSPARENT_POINT = (0.85, 0.5)


@pytest.mark.parametrize("fmt", ["png", "webp"])
@pytest.mark.parametrize("source", sorted(ALPHA_SOURCES))
def test_transparency_kept_where_the_format_has_alpha(source: str, fmt: str) -> None:
    image = one(ALPHA_SOURCES[source](), 64, fmt)
    assert image.mode in ("RGBA", "LA")
    assert pixel(image, *TRANSPARENT_POINT)[-1] == 0
    assert pixel(image, *OPAQUE_POINT)[-1] == 255


@pytest.mark.parametrize("source", sorted(ALPHA_SOURCES))
def test_jpeg_output_flattened_onto_white(source: str) -> None:
    image = one(ALPHA_SOURCES[source](), 64, "jpeg")
    assert image.mode in ("RGB", "L")
    # The colour hidden under the transparent half is black: it must not show through.
    assert min(pixel(image, *TRANSPARENT_POINT)) >= 250
    assert max(pixel(image, *OPAQUE_POINT)) < 230  # the card itself, not white


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "data",
    [imagegen.png(mode="I;16"), imagegen.tiff(mode="I;16")],
    ids=["png", "tiff"],
)
def test_16_bit_grey_is_scaled_not_clipped(data: bytes, fmt: str) -> None:
    image = one(data, 64, fmt)
    assert grey_spread(image) <= 4
    # Lower half: 16-bit 32768, i.e. mid-grey; clipping to 8 bits would make it white (255).
    assert pixel(image, 0.5, 0.75)[0] == pytest.approx(128, abs=3)
    # Upper half: a ramp from 0 on the left to 65535 on the right.
    assert pixel(image, 0.02, 0.1)[0] < 20
    assert pixel(image, 0.98, 0.1)[0] > 235
    assert pixel(image, 0.5, 0.1)[0] == pytest.approx(128, abs=8)


@pytest.mark.parametrize("fmt", FORMATS)
def test_greyscale_stays_grey(fmt: str) -> None:
    source = Image.open(io.BytesIO(imagegen.jpeg(mode="L")))
    image = one(imagegen.jpeg(mode="L"), 64, fmt)
    if fmt in ("jpeg", "png"):
        assert image.mode == "L"
    assert grey_spread(image) <= 4
    # Same brightness as the source at the same place (the white disc in the middle).
    assert pixel(image, 0.5, 0.5)[0] == pytest.approx(source.getpixel((150, 100)), abs=6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_bilevel_image(fmt: str) -> None:
    image = one(imagegen.png(mode="1"), 64, fmt)
    assert image.size == (64, 43)
    assert grey_spread(image) <= 4
    assert pixel(image, 0.1, 0.1)[0] >= 240  # the white block
    assert pixel(image, 0.1, 0.9)[0] <= 15  # black background


@pytest.mark.parametrize("fmt", FORMATS)
def test_colour_profile_kept(fmt: str) -> None:
    data = imagegen.jpeg(icc=True)
    profile = Image.open(io.BytesIO(data)).info["icc_profile"]
    assert profile
    assert one(data, 64, fmt).info.get("icc_profile") == profile


def test_cmyk_profile_not_attached_to_rgb_output() -> None:
    data = imagegen.jpeg(mode="CMYK")
    # Pillow's own CMYK JPEGs carry no profile; attach a fake one to the CMYK source.
    image = Image.open(io.BytesIO(data))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", icc_profile=b"not really a CMYK profile")
    for fmt in FORMATS:
        assert "icc_profile" not in one(buffer.getvalue(), 64, fmt).info


def test_grey_profile_kept_only_where_the_pixels_stay_grey() -> None:
    grey_profile = bytearray(imagegen.srgb_profile())
    grey_profile[16:20] = b"GRAY"  # the header's colour-space field is all that is checked
    buffer = io.BytesIO()
    imagegen.picture(120, 80, "L").save(buffer, "JPEG", icc_profile=bytes(grey_profile))
    assert one(buffer.getvalue(), 64, "png").info.get("icc_profile") == bytes(grey_profile)
    assert one(buffer.getvalue(), 64, "jpeg").info.get("icc_profile") == bytes(grey_profile)
    # WebP stores grey as RGB: a grey profile would describe the wrong pixels.
    assert "icc_profile" not in one(buffer.getvalue(), 64, "webp").info


# ---------------------------------------------------------------------------------------------
# Output formats and metadata


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_format_content_type_and_extension(fmt: str) -> None:
    [thumb] = make_thumbnails(imagegen.jpeg(), [64], fmt=fmt)
    expected_type = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[fmt]
    expected_ext = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}[fmt]
    assert (thumb.content_type, thumb.extension) == (expected_type, expected_ext)
    probe = Image.open(io.BytesIO(thumb.data))
    assert probe.format == PILLOW_FORMAT[fmt]
    probe.verify()
    image = decode(thumb)
    assert image.size == (thumb.width, thumb.height) == (64, 43)
    assert imagegen.marker_corner(image) == "top-left"


METADATA_SOURCES = {
    "jpeg": lambda: imagegen.jpeg(orientation=6, exif_gps=True, icc=True, extra_metadata=True),
    "png-exif": lambda: imagegen.png(orientation=6),
    "webp-exif": lambda: imagegen.webp(orientation=6),
    "tiff": lambda: imagegen.tiff(orientation=6),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("source", sorted(METADATA_SOURCES))
def test_metadata_stripped(source: str, fmt: str) -> None:
    data = METADATA_SOURCES[source]()
    if source == "jpeg":  # the source really does carry all of it
        original = Image.open(io.BytesIO(data))
        assert original.getexif().get_ifd(0x8825)
        assert imagegen.CAMERA_MAKE.encode() in data
        assert imagegen.COMMENT in data
    for thumb in make_thumbnails(data, [128, 32], fmt=fmt):
        image = decode(thumb)
        assert image.size[1] > image.size[0]  # oriented, though the tag itself is gone
        assert dict(image.getexif()) == {}
        assert image.getexif().get_ifd(0x8825) == {}  # no GPS
        assert not {"exif", "xmp", "XML:com.adobe.xmp", "comment"} & set(image.info)
        assert b"Exif" not in thumb.data
        assert b"eXIf" not in thumb.data
        assert b"OWDEDUP-TEST" not in thumb.data
        assert imagegen.CAMERA_MAKE.encode() not in thumb.data


# ---------------------------------------------------------------------------------------------
# Bad input


def refused(data: bytes, **options: object) -> BadInputError:
    """The BadInputError for *data*, checking that it names the object."""
    with pytest.raises(BadInputError) as caught:
        make_thumbnails(data, [64], name=NAME, **options)  # type: ignore[arg-type]
    exc = caught.value
    assert exc.key == NAME
    assert exc.kind == "bad-input"
    assert str(exc).startswith(f"{NAME}: ")
    return exc


def test_empty_object_refused() -> None:
    assert "zero bytes" in str(refused(b""))


def test_not_an_image_refused() -> None:
    assert "not an image" in str(refused(imagegen.not_an_image()))


@pytest.mark.parametrize(
    "data",
    [
        imagegen.jpeg(),
        imagegen.png(),
        imagegen.png(mode="RGBA"),
        imagegen.png(mode="I;16"),
        imagegen.gif(),
        imagegen.webp(),
        imagegen.tiff(),
        imagegen.bmp(),
    ],
    ids=["jpeg", "png", "png-rgba", "png-16", "gif", "webp", "tiff", "bmp"],
)
@pytest.mark.parametrize("box", [64, 1000])  # 1000: the image needs no reduction at all
def test_truncated_image_refused(data: bytes, box: int) -> None:
    with pytest.raises(BadInputError) as caught:
        make_thumbnails(imagegen.truncated(data), [box], name=NAME)
    assert caught.value.key == NAME
    assert "corrupt or truncated" in str(caught.value)


CORRUPT_SOURCES = {
    # Scrambled compressed data part-way: reading a PNG's EXIF decoded it, the error was
    # swallowed as "unreadable EXIF" and the next load kept the partial pixels.
    "png-broken-stream": lambda: imagegen.png_broken_stream(imagegen.png(600, 400)),
    "png-exif-broken-stream": lambda: imagegen.png_broken_stream(
        imagegen.png(600, 400, orientation=6)),
    "png-rgba-broken-stream": lambda: imagegen.png_broken_stream(
        imagegen.png(600, 400, mode="RGBA")),
    # A well-formed file whose pixel stream ends half-way: Pillow fills the rest with black.
    "png-short-stream": lambda: imagegen.png_short_stream(imagegen.png(600, 400)),
    "png-16-short-stream": lambda: imagegen.png_short_stream(
        imagegen.png(600, 400, mode="I;16")),
    "jpeg-broken-scan": lambda: imagegen.jpeg_broken_scan(imagegen.jpeg(600, 400)),
    "jpeg-truncated": lambda: imagegen.truncated(imagegen.jpeg(600, 400, orientation=6)),
    "jpeg-progressive-truncated": lambda: imagegen.truncated(
        imagegen.jpeg(600, 400, progressive=True)),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("box", [64, 1000])  # 1000: the image needs no reduction at all
@pytest.mark.parametrize("source", sorted(CORRUPT_SOURCES))
def test_corrupt_pixel_data_refused(source: str, box: int, fmt: str) -> None:
    with pytest.raises(BadInputError) as caught:
        make_thumbnails(CORRUPT_SOURCES[source](), [box], fmt=fmt, name=NAME)
    assert caught.value.key == NAME
    assert caught.value.kind == "bad-input"
    assert "corrupt or truncated" in str(caught.value)


def test_interlaced_png_is_not_mistaken_for_a_short_one() -> None:
    # The completeness check counts Adam7's seven passes; a whole interlaced PNG is whole.
    data = imagegen.png_interlaced(301, 199)
    source = Image.open(io.BytesIO(data))
    assert source.info.get("interlace")
    assert source.convert("RGBA").tobytes() == imagegen.rgba_card(301, 199).tobytes()
    image = one(data, 64)
    assert image.size == (64, 42)
    assert imagegen.marker_corner(image) == "top-left"
    with pytest.raises(BadInputError, match="corrupt or truncated"):
        make_thumbnails(imagegen.png_short_stream(data), [64], name=NAME)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "1", "I;16"])
def test_png_whose_last_rows_are_black_is_whole(mode: str) -> None:
    # The stream check looks at the last row first: an all-zero one must not be taken for
    # the zeros a short stream leaves behind without the full check.
    image = imagegen.picture(300, 200, "RGB").convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = imagegen.picture(300, 200, "I;16")
    image.paste(Image.new(image.mode, (300, 40)), (0, 160))  # zeros: black / transparent
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    [thumb] = make_thumbnails(buffer.getvalue(), [64], fmt="png", name=NAME)
    assert (thumb.width, thumb.height) == (64, 43)
    with pytest.raises(BadInputError, match="corrupt or truncated"):
        make_thumbnails(imagegen.png_short_stream(buffer.getvalue()), [64], name=NAME)


def test_truncated_images_are_never_loaded_as_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # A library that turns Pillow's LOAD_TRUNCATED_IMAGES on in the same process would make
    # every truncated image a "computed" thumbnail with a grey or black band.
    from PIL import ImageFile

    from owdedup.runtime.errors import ConfigError

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ConfigError, match="LOAD_TRUNCATED_IMAGES"):
        make_thumbnails(imagegen.jpeg(), [64], name=NAME)


@pytest.mark.parametrize("data", [imagegen.jpeg(), imagegen.png()], ids=["jpeg", "png"])
def test_truncated_message_says_truncated(data: bytes) -> None:
    assert "truncated" in str(refused(imagegen.truncated(data)))


def test_bomb_header_over_max_pixels_refused_before_decoding() -> None:
    data = imagegen.bomb_png(8000, 8000)
    assert len(data) < 100
    message = str(refused(data))  # default limit: 50 million pixels
    assert "over the limit" in message
    assert "8000x8000" in message
    assert "64000000" in message
    assert "50000000" in message


def test_bomb_header_over_custom_limit_refused() -> None:
    message = str(refused(imagegen.bomb_png(100, 11), max_pixels=1000))
    assert "1100" in message
    assert "1000" in message


def test_huge_bomb_header_refused() -> None:
    message = str(refused(imagegen.bomb_png(20000, 20000)))
    assert "400000000" in message  # Pillow refuses this one itself, in the same words
    assert "over the limit" in message


def test_pixel_limit_is_inclusive_for_real_images() -> None:
    data = imagegen.jpeg(2000, 1500)  # 3 million pixels
    thumbs = make_thumbnails(data, [256, 64], max_pixels=3_000_000, name=NAME)
    assert [(t.width, t.height) for t in thumbs] == [(256, 192), (64, 48)]
    message = str(refused(data, max_pixels=2_999_999))
    assert "2000x1500" in message
    assert "2999999" in message


def test_memory_budget_refuses_from_the_header_before_decoding() -> None:
    data = imagegen.bomb_png(7000, 7000, mode="RGBA")  # 49 MP: within max_pixels
    assert len(data) < 100
    message = str(refused(data))  # default budget
    assert "7000x7000 RGBA PNG" in message
    assert f"over the memory budget of {DEFAULT_MAX_MEMORY_MB} MiB" in message
    needed = int(message.split("would need about ")[1].split(" MiB")[0])
    assert 49e6 * 8 / (1 << 20) < needed < 49e6 * 10 / (1 << 20)  # RGBA costs ~8 B/px


def test_memory_budget_depends_on_the_mode_not_just_the_pixel_count() -> None:
    # The same 4 MP: a JPEG decodes at a reduced DCT scale, an RGBA PNG in full plus
    # Pillow's premultiplied copy while resizing.
    jpeg = imagegen.jpeg(2400, 1600)
    rgba = imagegen.png(2400, 1600, mode="RGBA")
    [thumb] = make_thumbnails(jpeg, [64], max_memory_mb=24, name=NAME)
    assert (thumb.width, thumb.height) == (64, 43)
    message = str(refused(rgba, max_memory_mb=24))
    assert "2400x1600 RGBA PNG" in message
    assert "over the memory budget of 24 MiB" in message
    assert make_thumbnails(rgba, [64], max_memory_mb=64, name=NAME)


def test_memory_budget_and_pixel_limit_are_separate_checks() -> None:
    data = imagegen.bomb_png(8000, 8000, mode="RGBA")
    assert "over the limit of 50000000" in str(refused(data, max_memory_mb=1 << 20))
    assert "memory budget" in str(refused(data, max_pixels=10**9))


def test_default_memory_budget_matches_the_function_parameters() -> None:
    assert functions.DEFAULT_MAX_MEMORY_MB == DEFAULT_MAX_MEMORY_MB
    params = functions.get_function("thumbnail").normalise({"max_memory_mb": "64"})
    assert params.max_memory_mb == 64
    assert functions.get_function("thumbnail").normalise({}).max_memory_mb == 200


def test_typical_20_megapixel_photo_fits_the_default_budget_at_1024() -> None:
    # A 20 MP progressive 4:2:0 JPEG, as cameras and photo sites deliver them, needs about
    # 140 MiB at box 1024 (decoded image + libjpeg's coefficient buffer): the estimate once
    # counted the decoded image twice and refused it ("would need about 270 MiB"; now 156).
    data = imagegen.jpeg(5472, 3648, progressive=True)
    image = Image.open(io.BytesIO(data))
    assert image.info.get("progressive") and image.size == (5472, 3648)
    assert estimate_memory(image, len(data), 1024) <= DEFAULT_MAX_MEMORY_MB << 20
    check_header(data[:HEADER_BYTES], len(data), [1024, 256], name=NAME)  # no refusal


_MEASURE = textwrap.dedent("""
    import io, json, sys
    from PIL import Image
    from owdedup.runtime.thumbnail import estimate_memory, make_thumbnails
    data = sys.stdin.buffer.read()
    box = int(sys.argv[1])
    estimate = estimate_memory(Image.open(io.BytesIO(data)), len(data), box)
    def rss(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(field)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM: the peak of the call alone
    before = rss("VmRSS") - len(data)  # the estimate counts the file's bytes
    make_thumbnails(data, [box], max_memory_mb=estimate // (1 << 20) + 1)
    print(json.dumps({"estimate": estimate, "used": rss("VmHWM") - before}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize(
    ("make", "box"),
    [
        (lambda: imagegen.png(2000, 1500, mode="RGBA"), 64),
        (lambda: imagegen.png(2000, 1500, mode="I;16"), 64),
        (lambda: imagegen.png(2000, 1500, mode="I;16", colour_key=True), 64),
        (lambda: imagegen.jpeg(3000, 2000, progressive=True), 64),
        (lambda: imagegen.jpeg(3000, 2000, progressive=True), 1024),  # decoded at full scale
        (lambda: imagegen.jpeg(3000, 2000), 1024),
    ],
    ids=["png-rgba", "png-16", "png-16-key", "jpeg-progressive", "jpeg-progressive-1024",
         "jpeg-1024"],
)
def test_accepted_image_stays_within_its_memory_estimate(
    make: Callable[[], bytes], box: int
) -> None:
    data = make()
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(box)], input=data, capture_output=True, check=True
    )
    result = json.loads(out.stdout)
    # The estimate carries a 10% margin plus 8 MiB of fixed allowance; allocator noise of a
    # couple of MiB must not make it an underestimate.
    assert result["used"] <= result["estimate"] + (2 << 20), result
    # ... and is not wildly pessimistic either.
    assert result["estimate"] < 3 * result["used"] + (12 << 20), result


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "EPS"])
def test_unsupported_input_format_named(fmt: str) -> None:
    assert fmt not in INPUT_FORMATS
    message = str(refused(imagegen.unsupported(fmt)))
    assert "unsupported image format" in message
    assert fmt in message


@pytest.mark.parametrize("fmt", ["gif", "JPEG", "tiff", ""])
def test_unsupported_output_format_refused(fmt: str) -> None:
    message = str(refused(imagegen.jpeg(), fmt=fmt))
    assert "unsupported output format" in message
    assert repr(fmt) in message


def test_error_without_name_has_no_prefix() -> None:
    with pytest.raises(BadInputError) as caught:
        make_thumbnails(b"", [64])
    assert caught.value.key is None
    assert str(caught.value).startswith("empty object")
