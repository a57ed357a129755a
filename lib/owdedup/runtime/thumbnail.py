"""The thumbnail function itself: image bytes in, encoded thumbnails out. Pure; no I/O.

This module's source is part of the thumbnail function's identity (see ``functions.py``):
any change here makes every earlier record a miss. Keep everything that shapes the output in
this one file, and nothing that does not.

One decode serves all requested sizes: the largest thumbnail is made from the decoded image
(JPEG is decoded at a reduced DCT scale, as Pillow's ``thumbnail`` does when it draws on an
undecoded image), and each smaller size is derived from the next larger result. EXIF
orientation is applied after the reduction, where it moves a few thousand pixels instead of
millions.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageFile, PngImagePlugin, UnidentifiedImageError

from owdedup.runtime.errors import BadInputError, ConfigError
from owdedup.runtime.functions import DEFAULT_MAX_MEMORY_MB, DEFAULT_MAX_PIXELS, DEFAULT_QUALITY

# Formats we decode. Anything else is refused before its plugin can run (EPS would start
# Ghostscript, for instance).
INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")  # JPEG covers MPO

# output format -> (Pillow format, content type, file extension)
OUTPUT_FORMATS: dict[str, tuple[str, str, str]] = {
    "jpeg": ("JPEG", "image/jpeg", ".jpg"),
    "png": ("PNG", "image/png", ".png"),
    "webp": ("WEBP", "image/webp", ".webp"),
}

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Same reducing gap as Pillow's own Image.thumbnail default, so quality matches the plain loop.
_REDUCING_GAP = 2.0
# BICUBIC, chosen by measurement (benchmarks/bench_resample.py, 12 real 6-30 MP photos, box
# 256, against LANCZOS from a full-resolution decode): LANCZOS 50.8 dB PSNR / 0.42 mean
# absolute error, BICUBIC 45.7 dB / 0.81 (under one level of 255: no visible difference),
# HAMMING 41.9 / 1.25, BILINEAR 40.0 / 1.57, BOX 39.5 / 1.62; resizing with BICUBIC takes
# 0.6-0.8x LANCZOS's time (0.7-1.6% of the whole call), the lower ones gain about 1% more
# for a visible loss. It is also Pillow's thumbnail() default, what the plain loop uses. A change
# here changes the function's identity (this file's digest is part of it), as it must.
_RESAMPLE = Image.Resampling.BICUBIC
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  Image.DecompressionBombError)

_MIB = 1 << 20
# Memory a full-resolution decode costs, in bytes per input pixel, by (format, mode) with
# "+t" for a transparency key (PNG tRNS, GIF transparency), measured: peak RSS (VmHWM) of a
# fresh process minus its RSS with the file already read, make_thumbnails(data, [256]),
# photo-like images of 10 and 20 MP, Pillow 13.0, the slope between the two sizes (the
# intercept, at most 7.2 MiB, is _FIXED_BYTES); checked again at 12 MP for boxes 256 and 1024
# by benchmarks/bench_memory.py (estimate / measured 1.14-1.5 for every one of these):
#   1 (PNG) 2.00            -> L copy
#   1+t (PNG) 7.8           -> LA, then Pillow's premultiplied La copy in resize()
#   L (PNG, TIFF, BMP) 0.99-1.01
#   P (PNG, GIF, BMP) 4.98-5.01       -> RGB copy; the P image dies before the resize
#   P+t (PNG) 7.99          -> RGBA, then Pillow's premultiplied RGBa copy in resize()
#   RGB (PNG, TIFF raw/deflate/jpeg, BMP) 3.98-4.01     (Pillow stores RGB as 4 bytes)
#   CMYK (TIFF) 4.00
#   LA (PNG) 8.00, RGBA (PNG, TIFF raw/deflate) 7.97-8.00   (+ the La/RGBa copy)
#   I;16 (PNG, TIFF raw/deflate) 2.09-2.13   (BOX-shrunk while 16-bit, see _resizable)
#   I;16+t (PNG) 10.6       -> two 16-bit and three 8-bit planes for the key, LA, La
#   WebP RGB 16.67, RGBA 16.81   (libwebp's canvas buffers + the frame bytes + the image)
# Not measured, derived from the copies the code makes: L+t / RGB+t (-> LA / RGBA) and PA
# as RGBA; I and F (4-byte) as their decode plus the small 8-bit result.
_FULL_DECODE_COST = {
    "1": 2.0, "1+t": 9.0, "L": 1.0, "P": 5.0, "P+t": 8.0, "L+t": 8.0, "RGB": 4.0,
    "RGB+t": 8.0, "CMYK": 4.0, "LA": 8.0, "PA": 8.0, "RGBA": 8.0, "I;16": 2.13,
    "I;16+t": 11.0, "I": 5.0, "F": 5.0,
}
_WEBP_COST = 17.0
_FALLBACK_COST = 8.0  # any other mode is converted to RGB(A): decode + converted copy
# JPEG is decoded at the draft scale Pillow picks for the largest box, into one image of 4
# bytes a pixel (1 for L). A progressive JPEG also keeps libjpeg's whole coefficient buffer,
# 2 bytes per DCT sample at full size, whatever the scale: measured 3.29 B/px (RGB 4:2:0,
# 1.5 samples/px -> 3), 6.26 (RGB 4:4:4 -> 6), 2.06 (L -> 2), 8.28 (CMYK -> 8). libjpeg frees
# that buffer when the decode ends, before anything is resized: the peak is the larger of
# (decoded image + coefficients) and (decoded image + reduced copy + thumbnails), not their
# sum, which counted the decoded image twice and estimated 2x the measured use at box 1024
# (36 real 6-30 MP progressive photos: estimate / measured 1.51-2.11, now 1.15-1.29).
_COEFFICIENT_BYTES = 2
# Everything per-call that does not grow with the input (decoder state, the reduced image
# for a 256 px box, the encoder): the measured intercepts were 0.8-7.2 MiB.
_FIXED_BYTES = 8 * _MIB
# A PNG's text chunks (tEXt, zTXt, iTXt) are decompressed into memory while the header is
# read, before anything can be judged: Pillow allows 64 MiB of them, so a 64 KiB file of
# zTXt took 65 MiB where the estimate said 9. The thumbnail keeps no metadata, so the text
# Pillow may hold is capped here (a PNG with more is refused as corrupt) and counted in the
# estimate of every PNG. Editors' XMP packets are tens of kB; 4 MiB leaves them ample room.
_PNG_TEXT_BYTES = 4 * _MIB
PngImagePlugin.MAX_TEXT_MEMORY = _PNG_TEXT_BYTES
# The estimate is the measured cost times this (decoders' rounding, allocator slack): the
# one safety margin.
_SAFETY = 1.1


@dataclass(frozen=True)
class Thumbnail:
    size: int
    data: bytes
    width: int
    height: int
    content_type: str
    extension: str


#: Bytes of an object read to judge its header before the rest: more than the header of any
#: supported image as cameras and editors write it (a JPEG's metadata segments before its
#: frame header are at most 64 KiB each; the photos measured need 3.3 KiB).
HEADER_BYTES = 256 * 1024


def check_header(
    prefix: bytes,
    size: int,
    sizes: Sequence[int],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
    name: str | None = None,
) -> None:
    """Refuse, from its first bytes *prefix*, an object of *size* bytes that ``make_thumbnails``
    would refuse from its header: not an image, over *max_pixels*, or over *max_memory_mb*
    with its *size* bytes counted. Nothing else is read; the caller reads the body only after.

    A supported format whose header runs past the prefix (a TIFF may keep its directory at
    the end) can be judged only whole: it passes only when its bytes alone fit the budget.
    """
    if size == 0 or not prefix:
        raise BadInputError("empty object (zero bytes), not an image", key=name)
    if len(prefix) < size and not _identifiable(prefix):
        if not _has_supported_signature(prefix):
            raise BadInputError(_unsupported_reason(prefix), key=name)
        if size > max_memory_mb * _MIB:
            raise BadInputError(
                f"{size / _MIB:.1f} MiB file with no readable image header in its first "
                f"{len(prefix)} bytes: over the memory budget of {max_memory_mb} MiB "
                "(max_memory_mb) before any decoding",
                key=name,
            )
        return
    image = _open_checked(prefix, max_pixels, name)
    _check_memory(image, size, max(sizes), max_memory_mb, name)


def _identifiable(prefix: bytes) -> bool:
    try:
        Image.open(io.BytesIO(prefix), formats=INPUT_FORMATS).close()
    except Image.DecompressionBombError:
        return True  # identified, and far over the limit: _open_checked words it
    except Exception:  # noqa: BLE001 - any plugin failure on a prefix means "not identified"
        return False
    return True


def _has_supported_signature(prefix: bytes) -> bool:
    """True when the first bytes are the signature of a format we decode."""
    Image.init()
    for fmt in INPUT_FORMATS:
        accept = Image.OPEN[fmt][1] if fmt in Image.OPEN else None
        if accept is not None and accept(prefix):
            return True
    return False


def _require_strict_decoding() -> None:
    """Refuse to run where Pillow would accept truncated images as if they were whole."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ConfigError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process: a truncated image "
            "would be thumbnailed from its partial pixels; turn it off"
        )


def make_thumbnails(
    data: bytes,
    sizes: Sequence[int],
    *,
    fmt: str = "jpeg",
    quality: int | None = DEFAULT_QUALITY,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
    name: str | None = None,
) -> list[Thumbnail]:
    """Thumbnails of the image in *data* fitting boxes of *sizes* px, largest first.

    Raises ``BadInputError`` (naming *name*) for anything that is not a decodable image of a
    supported format within *max_pixels*, or whose decode would need more than
    *max_memory_mb* MiB (``estimate_memory``, the bytes in *data* included). Both are judged
    from the header, before anything is decoded.
    """
    if not data:
        raise BadInputError("empty object (zero bytes), not an image", key=name)
    if fmt not in OUTPUT_FORMATS:
        raise BadInputError(f"unsupported output format {fmt!r}", key=name)
    _require_strict_decoding()
    ordered = sorted(set(sizes), reverse=True)
    try:
        image = _open_checked(data, max_pixels, name)
        _check_memory(image, len(data), ordered[0], max_memory_mb, name)
        if image.format not in ("JPEG", "MPO"):
            # Decode now, where a decode error is fatal. Reading a PNG's EXIF loads the image,
            # and a load error swallowed there as "unreadable EXIF" left a partial image that
            # the next load() accepted (Pillow empties the tile list before raising). Only JPEG
            # has a draft decode to keep, and its EXIF never loads pixels. (Also: Pillow's TIFF
            # reader applies the Orientation tag itself while loading, then drops the tag.)
            image.load()
        if image.format == "PNG" and not _last_row_written(image):
            _check_png_stream_complete(data, name)
        orientation = _orientation(image)
        image = _resizable(image, ordered[0])
        image.thumbnail((ordered[0], ordered[0]), _RESAMPLE, reducing_gap=_REDUCING_GAP)
        image = _oriented(image, orientation)
        results = []
        for size in ordered:
            if max(image.size) > size:
                image = image.copy()
                image.thumbnail((size, size), _RESAMPLE, reducing_gap=_REDUCING_GAP)
            results.append(_encode(image, size, fmt, quality))
    except BadInputError:
        raise
    except _DECODE_ERRORS as exc:
        raise BadInputError(f"corrupt or truncated image: {exc}", key=name) from exc
    return results


def _open_checked(data: bytes, max_pixels: int, name: str | None) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
    except UnidentifiedImageError:
        raise BadInputError(_unsupported_reason(data), key=name) from None
    except Image.DecompressionBombError as exc:
        # Pillow refuses a header far over its own limit before the check below can run; word
        # it the same way ("over the limit"), with Pillow's figures.
        raise BadInputError(f"image is over the limit: {exc}", key=name) from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadInputError(f"image has no pixels ({width}x{height})", key=name)
    if width * height > max_pixels:
        raise BadInputError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} (possible decompression bomb)",
            key=name,
        )
    return image


def estimate_memory(image: Image.Image, data_bytes: int, box: int) -> int:
    """Bytes that thumbnailing the undecoded *image* to fit *box* px will add, at most.

    From the header only: the file's bytes, the full-resolution decode with the copies the
    pipeline makes (per format and mode, measured: see ``_FULL_DECODE_COST``), the reduced
    and output images for *box*, and a fixed allowance; times a safety margin.
    """
    width, height = image.size
    pixels = width * height
    coefficients, bpp = 0, 4
    metadata = _metadata_bytes(image)
    if image.format in ("JPEG", "MPO"):
        scale = _jpeg_draft_scale(width, height, box)
        width, height = math.ceil(width / scale), math.ceil(height / scale)
        bpp = 1 if image.mode == "L" else 4
        decoded = width * height * bpp
        if image.info.get("progressive") or image.info.get("progression"):
            coefficients = _jpeg_coefficient_bytes(image)
    elif image.format == "WEBP":
        decoded = int(pixels * _WEBP_COST)
    else:
        mode = image.mode
        if mode.startswith("I;16"):
            mode = "I;16"
        if "transparency" in image.info and mode in ("1", "L", "RGB", "P", "I;16"):
            mode += "+t"
        decoded = int(pixels * _FULL_DECODE_COST.get(mode, _FALLBACK_COST))
    # Reduced intermediate (reduce() by the integer factor thumbnail's reducing gap allows)
    # and the largest thumbnail with its copies (orientation, output mode, encoder).
    factor = int(max(width, height) / box / _REDUCING_GAP)
    reduced = math.ceil(width / factor) * math.ceil(height / factor) * bpp if factor > 1 else 0
    ratio = min(1.0, box / width, box / height)
    fitted = math.ceil(width * ratio) * math.ceil(height * ratio) * 4 * 3
    # The coefficient buffer is gone before the resize starts (see _COEFFICIENT_BYTES).
    working = decoded + max(coefficients, reduced + fitted)
    return int((data_bytes + metadata + working + _FIXED_BYTES) * _SAFETY)


def _metadata_bytes(image: Image.Image) -> int:
    """Metadata Pillow holds beside the file's bytes: a JPEG's APP segments are copied into
    ``applist`` (and its ICC profile joined once more), as big as the file allows (a 50 MiB
    file of APP segments took 50 MiB more); a PNG's text, up to ``_PNG_TEXT_BYTES``."""
    if image.format == "PNG":
        return _PNG_TEXT_BYTES
    applist = getattr(image, "applist", None) or []
    icc_profile = image.info.get("icc_profile")
    return sum(len(segment) for _, segment in applist) + (
        len(icc_profile) if isinstance(icc_profile, bytes) else 0)


def _jpeg_draft_scale(width: int, height: int, box: int) -> int:
    """The DCT scale (1, 2, 4 or 8) ``JpegImageFile.draft`` picks inside ``thumbnail``."""
    request = int(box * _REDUCING_GAP)
    scale = min(width // request, height // request)
    return next(s for s in (8, 4, 2, 1) if scale >= s or s == 1)


def _jpeg_coefficient_bytes(image: Image.Image) -> int:
    """libjpeg's whole-image coefficient buffer of a progressive JPEG (2 bytes a sample)."""
    layers = getattr(image, "layer", None) or [(0, 1, 1, 0)] * len(image.getbands())
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    # Whole MCUs: the buffer covers the image padded to the MCU grid.
    mcu_w, mcu_h = 8 * h_max, 8 * v_max
    padded = math.ceil(image.width / mcu_w) * mcu_w * math.ceil(image.height / mcu_h) * mcu_h
    samples = sum(layer[1] * layer[2] for layer in layers) / (h_max * v_max)
    return int(padded * samples * _COEFFICIENT_BYTES)


def _check_memory(
    image: Image.Image, data_bytes: int, box: int, max_memory_mb: int, name: str | None
) -> None:
    needed = estimate_memory(image, data_bytes, box)
    if needed > max_memory_mb * _MIB:
        width, height = image.size
        raise BadInputError(
            f"{width}x{height} {image.mode} {image.format} image ({data_bytes / _MIB:.1f} MiB "
            f"file) would need about {math.ceil(needed / _MIB)} MiB to decode and thumbnail, "
            f"over the memory budget of {max_memory_mb} MiB (max_memory_mb)",
            key=name,
        )


def _unsupported_reason(data: bytes) -> str:
    """Say whether the bytes are some other image format or no image at all."""
    supported = ", ".join(INPUT_FORMATS)
    try:
        # Identify only (reads the header); nothing is decoded.
        with Image.open(io.BytesIO(data)) as other:
            return f"unsupported image format {other.format} (supported: {supported})"
    except Exception:  # noqa: BLE001 - any plugin failure here just means "not an image"
        return f"not an image (or an unrecognised format; supported: {supported})"


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel
# Adam7: (x start, y start, x step, y step) of the seven passes.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def _last_row_written(image: Image.Image) -> bool:
    """True when the decoded PNG's last row (of Adam7's last pass, when interlaced) holds a
    non-zero byte: the decoder got there, so the stream was not cut short. Pillow decodes into
    a zeroed image, so a stream that ended early leaves that row all zeros; an image whose
    last row really is all zeros is checked the slow way (``_check_png_stream_complete``)."""
    last = image.height - 1
    if image.info.get("interlace"):
        last -= 1 - last % 2  # pass 7 writes the odd rows, and comes last
        if last < 1:
            return False
    return any(image.crop((0, last, image.width, last + 1)).tobytes())


def _check_png_stream_complete(data: bytes, name: str | None) -> None:
    """Refuse a PNG whose compressed pixel stream ends (cleanly) before the last row.

    Pillow's PNG decoder stops at the end of the zlib stream and keeps whatever rows it got:
    the rest of the image stays black, and nothing says so. Inflate the IDAT data again,
    counting bytes without keeping them, and compare with what the header promises.
    """
    width, height, depth, colour, interlace = struct.unpack(">IIBB2xB", data[16:29])
    bits = depth * _PNG_CHANNELS.get(colour, 4)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            expected += rows * (1 + -(-(columns * bits) // 8))  # a filter byte per row
    inflater = zlib.decompressobj()
    got, pos = 0, 8
    while pos + 8 <= len(data) and got < expected:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            chunk = data[pos + 8:pos + 8 + length]
            while chunk and got < expected:
                got += len(inflater.decompress(chunk, 1 << 20))
                chunk = inflater.unconsumed_tail
        pos += 12 + length
    if got < expected:
        raise BadInputError(
            f"corrupt or truncated image: the PNG pixel data ends after {got} of "
            f"{expected} bytes", key=name,
        )


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS:
        return 1  # unreadable EXIF is not a reason to refuse the picture
    return value if isinstance(value, int) else 1


def _oriented(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    return image if method is None else image.transpose(method)


def _resizable(image: Image.Image, box: int) -> Image.Image:
    """Bring modes that resize badly or not at all into one that resizes well.

    JPEG modes (L, RGB, CMYK) are left alone so ``thumbnail`` can still draft-decode them.
    """
    mode = image.mode
    keyed = "transparency" in image.info
    if keyed and mode in ("1", "L", "RGB"):
        # A transparent colour key (PNG tRNS) becomes an alpha channel; otherwise it is lost
        # and the keyed-out area shows its hidden colour. JPEG never has one.
        return image.convert("RGBA" if mode == "RGB" else "LA")
    if keyed and (mode.startswith("I;16") or mode == "I"):
        return _keyed_wide_grey(image)
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    if mode == "P":
        # Palette images resize with nearest-neighbour only; expand them first.
        has_alpha = "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode == "PA":
        return image.convert("RGBA")
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey: shrink while still 16-bit (BOX resize works on it, reduce() does not),
        # so the 32-bit copy below is small: converting first kept three full-size copies
        # (a 50 MP image peaked at 579 MiB, this way 210 MiB). Then scale to 8 bits instead
        # of clipping everything above 255 to white.
        scale = min(1.0, _REDUCING_GAP * box / max(image.size))
        if scale < 1.0:
            target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(target, Image.Resampling.BOX)
        return image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if mode == "F":
        return image.convert("L")
    return image.convert("RGBA" if "A" in mode or "a" in mode else "RGB")


def _keyed_wide_grey(image: Image.Image) -> Image.Image:
    """16/32-bit grey with a transparency key (PNG tRNS) as 8-bit LA at full size.

    The key is compared with the original values (Pillow's own keyed conversion of I;16
    compares clipped 8-bit values: every pixel came out opaque), and the grey is scaled to 8
    bits as in ``_resizable``. Nothing is shrunk first: averaging would mix keyed-out pixels
    into the rest.
    """
    key = image.info["transparency"]
    # Alpha 0 exactly where the value is the key: |v - key| * 255, clipped to 8 bits, taken
    # both ways round (point() keeps I;16 in 16 bits, so no 32-bit full-size copy is made).
    above = image.point(lambda v: (v - key) * 255).convert("L")
    below = image.point(lambda v: (key - v) * 255).convert("L")
    alpha = ImageChops.lighter(above, below)
    del above, below
    grey = image.point(lambda v: v * (1 / 256)).convert("L")
    return Image.merge("LA", (grey, alpha))


def _encode(image: Image.Image, size: int, fmt: str, quality: int | None) -> Thumbnail:
    pillow_format, content_type, extension = OUTPUT_FORMATS[fmt]
    icc_profile = image.info.get("icc_profile")
    out = _output_mode(image, pillow_format)
    # A fresh info dict strips EXIF, XMP, comments and text chunks. The colour profile is
    # colour data, not metadata: it is kept while it still describes the stored pixels.
    out.info = {}
    options: dict[str, object] = {}
    if isinstance(icc_profile, bytes) and _profile_fits(icc_profile, out.mode, pillow_format):
        options["icc_profile"] = icc_profile
    if pillow_format in ("JPEG", "WEBP") and quality is not None:
        options["quality"] = quality
    buffer = io.BytesIO()
    out.save(buffer, pillow_format, **options)
    return Thumbnail(size, buffer.getvalue(), out.width, out.height, content_type, extension)


def _profile_fits(icc_profile: bytes, mode: str, pillow_format: str) -> bool:
    """True when the profile's colour space (ICC header bytes 16-19) is that of the output.

    A CMYK profile never fits converted RGB pixels, and WebP stores greyscale as RGB.
    """
    space = icc_profile[16:20]
    if pillow_format == "WEBP" or mode in ("RGB", "RGBA"):
        return space == b"RGB "
    return mode in ("L", "LA") and space == b"GRAY"


def _output_mode(image: Image.Image, pillow_format: str) -> Image.Image:
    mode = image.mode
    if mode == "CMYK":
        return image.convert("RGB")
    if pillow_format == "JPEG" and mode in ("RGBA", "LA"):
        # JPEG has no alpha: flatten onto white, which is what viewers show for transparency.
        background = Image.new("RGB" if mode == "RGBA" else "L", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        return background
    # A copy (a few kB of pixels): the caller clears its metadata, and *image* is still the
    # source of the next smaller size.
    return image.copy()
