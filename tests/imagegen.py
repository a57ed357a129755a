"""Test images generated in memory with Pillow; tests never read image files from disk.

Every generator returns encoded bytes. Images are small (a few hundred pixels a side) so the
tests stay fast, but they have real structure: the colour images are drawn from one "test
card" (:func:`card`) whose four corners differ, with a pure red marker block in the top-left
corner. That asymmetry lets a test tell every EXIF orientation apart: see
:data:`ORIENTED_CORNER` and :func:`marker_corner`.

Images with alpha are opaque on their left half and fully transparent on their right half; the
colour hidden under the transparent half is black, so flattening onto white is visible.
"""

from __future__ import annotations

import functools
import io
import struct
import sys
import zlib
from array import array

from PIL import Image, ImageCms, ImageDraw

#: The red of the marker block.
MARKER = (255, 0, 0)
#: Text planted in the metadata of ``jpeg(..., exif_gps=True)`` / ``extra_metadata=True``; an
#: output that contains any of it has leaked metadata.
CAMERA_MAKE = "OWDEDUP-TEST-CAMERA"
COMMENT = b"OWDEDUP-TEST-COMMENT"
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b"<rdf:Description>OWDEDUP-TEST-XMP</rdf:Description></rdf:RDF></x:xmpmeta>"
)
#: Value of the constant lower half of ``png(..., mode="I;16")``: 16-bit mid-grey.
MID_GREY_16 = 32768

#: Where the marker of a stored landscape card appears once the EXIF orientation is applied
#: (the displayed image is portrait for orientations 5 to 8).
ORIENTED_CORNER = {
    1: "top-left",
    2: "top-right",  # mirrored
    3: "bottom-right",  # rotated 180°
    4: "bottom-left",  # flipped vertically
    5: "top-left",  # transposed (mirror + 90° CCW): portrait
    6: "top-right",  # rotated 90° clockwise: portrait
    7: "bottom-right",  # transversed: portrait
    8: "bottom-left",  # rotated 90° counter-clockwise: portrait
}

_EXIF_ORIENTATION = 0x0112
_EXIF_MAKE = 0x010F
_EXIF_MODEL = 0x0110
_EXIF_DATETIME = 0x0132
_EXIF_GPS_IFD = 0x8825


# ---------------------------------------------------------------------------------------------
# Pixels


def card(width: int = 300, height: int = 200) -> Image.Image:
    """The RGB test card: green grows left to right, blue top to bottom, red is 0.

    Corners: top-left black under a red marker block (a quarter of each side), top-right
    green, bottom-left blue, bottom-right cyan; a white disc in the middle adds an edge.
    """
    ramp = Image.linear_gradient("L")  # 256x256, 0 at the top, 255 at the bottom
    blue = ramp.resize((width, height))
    green = ramp.transpose(Image.Transpose.ROTATE_90).resize((width, height))  # 0 on the left
    image = Image.merge("RGB", (Image.new("L", (width, height), 0), green, blue))
    draw = ImageDraw.Draw(image)
    radius = min(width, height) // 6
    cx, cy = width // 2, height // 2
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill="white")
    draw.rectangle((0, 0, max(width // 4, 1) - 1, max(height // 4, 1) - 1), fill=MARKER)
    return image


def transparency_mask(width: int, height: int) -> Image.Image:
    """Alpha: 255 on the left half, 0 on the right half."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, max(width // 2, 1), height))
    return mask


def rgba_card(width: int = 300, height: int = 200) -> Image.Image:
    """The card with the right half fully transparent (black underneath)."""
    image = card(width, height)
    mask = transparency_mask(width, height)
    black = Image.new("RGB", (width, height), "black")
    image = Image.composite(image, black, mask)
    image.putalpha(mask)
    return image


def _palette_card(width: int, height: int) -> Image.Image:
    """A 256-colour palette card whose index 255 (black) is used only by the right half."""
    image = card(width, height).quantize(colors=255)
    palette = (image.getpalette() or [])[: 255 * 3]
    palette += [0, 0, 0] * (256 - len(palette) // 3)
    image.putpalette(palette)
    image.paste(255, (width // 2, 0, width, height))
    image.info["transparency"] = 255
    return image


def _grey16(width: int, height: int) -> Image.Image:
    """16-bit grey: upper half a ramp over 0..65535 left to right, lower half MID_GREY_16."""
    row = [round(x * 65535 / max(width - 1, 1)) for x in range(width)]
    values = array("H")
    for y in range(height):
        values.extend(row if y < height // 2 else [MID_GREY_16] * width)
    if sys.byteorder == "big":
        values.byteswap()  # "I;16" is little-endian
    return Image.frombytes("I;16", (width, height), values.tobytes())


def _bilevel(width: int, height: int) -> Image.Image:
    """Mode "1": black, with a white block where the card has its marker and a white line."""
    image = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, max(width // 4, 1) - 1, max(height // 4, 1) - 1), fill=1)
    draw.line((width // 2, height // 2, width - 1, height - 1), fill=1, width=3)
    return image


def picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """The card in *mode*: RGB, RGBA, L, LA, P (index 255 transparent), CMYK, I;16 (see
    :func:`_grey16`) or 1 (see :func:`_bilevel`)."""
    if mode == "RGB":
        return card(width, height)
    if mode == "RGBA":
        return rgba_card(width, height)
    if mode == "L":
        return card(width, height).convert("L")
    if mode == "LA":
        return rgba_card(width, height).convert("LA")
    if mode == "P":
        return _palette_card(width, height)
    if mode == "CMYK":
        return card(width, height).convert("CMYK")
    if mode == "I;16":
        return _grey16(width, height)
    if mode == "1":
        return _bilevel(width, height)
    raise ValueError(f"no test picture for mode {mode!r}")


# ---------------------------------------------------------------------------------------------
# Metadata


def exif(orientation: int | None = None, *, gps: bool = False) -> Image.Exif:
    """EXIF with an Orientation tag when given; with camera, date and GPS tags when *gps*."""
    data = Image.Exif()
    if orientation is not None:
        data[_EXIF_ORIENTATION] = orientation
    if gps:
        data[_EXIF_MAKE] = CAMERA_MAKE
        data[_EXIF_MODEL] = "Model 1"
        data[_EXIF_DATETIME] = "2024:05:06 07:08:09"
        position = data.get_ifd(_EXIF_GPS_IFD)
        position[1] = "N"  # GPSLatitudeRef
        position[2] = (52.0, 31.0, 12.5)  # GPSLatitude
        position[3] = "E"  # GPSLongitudeRef
        position[4] = (13.0, 24.0, 36.0)  # GPSLongitude
    return data


@functools.cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile (colour data that thumbnails are expected to keep).

    Cached: littleCMS stamps the creation time into the profile, so two calls a second apart
    would give different bytes.
    """
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Supported input formats


def jpeg(
    width: int = 300,
    height: int = 200,
    *,
    orientation: int | None = None,
    mode: str = "RGB",
    exif_gps: bool = False,
    quality: int = 90,
    icc: bool = False,
    extra_metadata: bool = False,
    progressive: bool = False,
) -> bytes:
    """A JPEG of the card in *mode* ("RGB", "L" or "CMYK"), *progressive* or baseline.

    *orientation* (1-8) adds an EXIF Orientation tag; the pixels stay stored as a landscape.
    *exif_gps* adds camera, date and GPS EXIF tags; *icc* an sRGB profile; *extra_metadata* a
    JPEG comment and an XMP packet.
    """
    if mode not in ("RGB", "L", "CMYK"):
        raise ValueError(f"JPEG cannot hold mode {mode!r}")
    options: dict[str, object] = {"quality": quality, "progressive": progressive}
    if orientation is not None or exif_gps:
        options["exif"] = exif(orientation, gps=exif_gps)
    if icc:
        options["icc_profile"] = srgb_profile()
    if extra_metadata:
        options["comment"] = COMMENT
        options["xmp"] = XMP
    return _encode(picture(width, height, mode), "JPEG", **options)


def png(
    width: int = 300,
    height: int = 200,
    mode: str = "RGB",
    *,
    orientation: int | None = None,
    colour_key: bool = False,
) -> bytes:
    """A PNG of the card in *mode*: "RGB", "RGBA", "L", "LA", "P" (index 255 transparent),
    "I;16" (16-bit grey) or "1". *orientation* adds an eXIf chunk with that Orientation.

    *colour_key* (RGB, L or I;16) paints the right half black and declares black transparent
    with a tRNS chunk: transparency without an alpha channel.
    """
    image = picture(width, height, mode)
    options: dict[str, object] = {}
    if mode == "P":
        options["transparency"] = 255
    if colour_key:
        if mode not in ("RGB", "L", "I;16"):
            raise ValueError("a colour key needs mode RGB, L or I;16")
        key: int | tuple[int, int, int] = (0, 0, 0) if mode == "RGB" else 0
        image.paste(key, (width // 2, 0, width, height))
        options["transparency"] = key
    if orientation is not None:
        options["exif"] = exif(orientation)
    return _encode(image, "PNG", **options)


def webp(
    width: int = 300,
    height: int = 200,
    mode: str = "RGB",
    *,
    orientation: int | None = None,
    lossless: bool = False,
) -> bytes:
    """A WebP of the card ("RGB" or "RGBA"), optionally with an EXIF Orientation."""
    options: dict[str, object] = {"lossless": lossless, "quality": 90}
    if orientation is not None:
        options["exif"] = exif(orientation)
    return _encode(picture(width, height, mode), "WEBP", **options)


def gif(width: int = 300, height: int = 200, *, transparency: bool = True) -> bytes:
    """A palette GIF of the card; its right half is transparent when *transparency*."""
    image = _palette_card(width, height)
    if not transparency:
        del image.info["transparency"]
        return _encode(image, "GIF")
    return _encode(image, "GIF", transparency=255)


def tiff(
    width: int = 300,
    height: int = 200,
    mode: str = "RGB",
    *,
    orientation: int | None = None,
    compression: str | None = None,
) -> bytes:
    """A TIFF of the card in *mode* (any mode of :func:`picture`), uncompressed unless
    *compression* names one ("tiff_lzw", "jpeg", ...: those are decoded by libtiff).
    *orientation* sets the TIFF Orientation tag."""
    options: dict[str, object] = {}
    if compression is not None:
        options["compression"] = compression
    if orientation is not None:
        options["exif"] = exif(orientation)
    return _encode(picture(width, height, mode), "TIFF", **options)


def bmp(width: int = 300, height: int = 200) -> bytes:
    """A 24-bit BMP of the card."""
    return _encode(card(width, height), "BMP")


def mpo(width: int = 300, height: int = 200) -> bytes:
    """A two-frame MPO (what stereo cameras write; a JPEG with a second JPEG appended)."""
    first = card(width, height)
    second = first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _encode(first, "MPO", save_all=True, append_images=[second])


# ---------------------------------------------------------------------------------------------
# Bad input


def truncated(data: bytes) -> bytes:
    """The first half of *data*: header intact, pixel data cut off."""
    return data[: len(data) // 2]


def corrupt_exif(data: bytes) -> bytes:
    """*data* (a JPEG) with an EXIF block inserted right after SOI whose first IFD offset
    points far past its end: unreadable metadata on a perfectly decodable image."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    payload = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\x00" * 8
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + segment + data[2:]


def not_an_image() -> bytes:
    """Plain text."""
    return b"This is a shopping list, not a picture.\nmilk\neggs\n" * 4


def unsupported(fmt: str = "PPM", width: int = 32, height: int = 24) -> bytes:
    """A valid image in a format Pillow reads but the thumbnail function refuses, e.g. "PPM",
    "ICO", "TGA" or "EPS" (written without Ghostscript)."""
    image = card(width, height)
    return _encode(image, fmt)


def unsupported_image() -> bytes:
    """A small valid PPM: readable by Pillow, refused by the thumbnail function."""
    return unsupported("PPM")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_with_idat(data: bytes, idat: bytes) -> bytes:
    """*data* (a PNG) with all its IDAT chunks replaced by one holding *idat* (CRCs valid)."""
    out, placed = data[:8], False
    for kind, body in _png_chunks(data):
        if kind != b"IDAT":
            out += _chunk(kind, body)
        elif not placed:
            out += _chunk(b"IDAT", idat)
            placed = True
    return out


def png_interlaced(width: int = 301, height: int = 199) -> bytes:
    """The RGBA card as an Adam7-interlaced PNG (Pillow reads these but cannot write them)."""
    image = rgba_card(width, height)
    pixels = image.tobytes()
    raw = bytearray()
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)):
        if x0 >= width:
            continue
        for y in range(y0, height, dy):
            raw.append(0)  # filter type None
            for x in range(x0, width, dx):
                raw += pixels[(y * width + x) * 4:(y * width + x) * 4 + 4]
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(bytes(raw))) + _chunk(b"IEND", b""))


def png_broken_stream(data: bytes) -> bytes:
    """*data* (a PNG) with 64 bytes in the middle of its compressed pixel stream scrambled.

    Every chunk CRC is valid: only the zlib stream is broken, part-way through the image."""
    idat = b"".join(body for kind, body in _png_chunks(data) if kind == b"IDAT")
    mid = len(idat) // 2
    return _png_with_idat(
        data, idat[:mid] + bytes(b ^ 0x55 for b in idat[mid:mid + 64]) + idat[mid + 64:]
    )


def png_short_stream(data: bytes) -> bytes:
    """*data* (a PNG) whose pixel stream is a valid zlib stream of only the first half of the
    rows: the file is well-formed, the image is cut short part-way."""
    idat = b"".join(body for kind, body in _png_chunks(data) if kind == b"IDAT")
    raw = zlib.decompress(idat)
    return _png_with_idat(data, zlib.compress(raw[: len(raw) // 2]))


def jpeg_broken_scan(data: bytes) -> bytes:
    """*data* (a baseline JPEG) with 64 bytes in the middle of its entropy-coded data
    scrambled (libjpeg reports this one as an error; see the thumbnail tests)."""
    start = data.find(b"\xff\xda")
    mid = (start + len(data)) // 2
    return data[:mid] + bytes(b ^ 0x55 for b in data[mid:mid + 64]) + data[mid + 64:]


def bomb_png(width: int = 20000, height: int = 20000, mode: str = "L") -> bytes:
    """A tiny (~70 byte) PNG whose header claims *width* x *height* pixels of *mode*.

    It is a valid 1x1 PNG with its IHDR width and height patched and the chunk CRC recomputed,
    so a reader that trusts the header would try to allocate and decode the claimed size.
    """
    data = bytearray(_encode(Image.new(mode, (1, 1)), "PNG"))
    # signature (8) + IHDR length (4) + b"IHDR" (4), then width and height (4 bytes each).
    if data[12:16] != b"IHDR":
        raise AssertionError("Pillow wrote an unexpected PNG layout")
    body = struct.pack(">II", width, height) + bytes(data[24:29])
    data[8:33] = _chunk(b"IHDR", body)
    return bytes(data)


# ---------------------------------------------------------------------------------------------
# Reading results back


def marker_corner(image: Image.Image) -> str | None:
    """Which corner of *image* holds the red marker block (None if no corner is red).

    Each corner is sampled 10% in from both edges: inside the marker block (a quarter of each
    side) and clear of blurred or JPEG-smeared edges.
    """
    rgb = image.convert("RGB")
    width, height = rgb.size
    dx, dy = width // 10, height // 10
    points = {
        "top-left": (dx, dy),
        "top-right": (width - 1 - dx, dy),
        "bottom-left": (dx, height - 1 - dy),
        "bottom-right": (width - 1 - dx, height - 1 - dy),
    }
    red = [name for name, xy in points.items() if _is_marker(rgb.getpixel(xy))]
    if len(red) > 1:
        raise AssertionError(f"several red corners: {red}")
    return red[0] if red else None


def _is_marker(pixel: object) -> bool:
    if not isinstance(pixel, tuple):
        return False
    r, g, b = pixel[:3]
    return bool(r > 200 and g < 70 and b < 70)
