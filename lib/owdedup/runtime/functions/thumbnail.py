"""The thumbnail function as a plug-in: its parameters, variants, identity and compute call.

The pixels themselves are made by :mod:`owdedup.runtime.thumbnail`, whose source is the
identity's code digest; this module only says how a request becomes variants, and imports
that module (and Pillow) inside :meth:`ThumbnailFunction.compute`, on a miss only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from owdedup.runtime.errors import ConfigError
from owdedup.runtime.functions.base import Produced, Variant, identity_of

MAX_SIZE = 4096
DEFAULT_SIZES = (256,)
DEFAULT_QUALITY = 85
DEFAULT_MAX_PIXELS = 50_000_000
# MiB a thumbnail call may add for one image (file bytes + decode), estimated from the header
# (owdedup.runtime.thumbnail.estimate_memory, whose defaults are these). 256 MiB action
# memory - ~45 MiB process with its clients - ~10 MiB slack.
DEFAULT_MAX_MEMORY_MB = 200
_FORMAT_ALIASES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png", "webp": "webp"}
_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


@dataclass(frozen=True)
class ThumbnailParams:
    sizes: tuple[int, ...]  # largest first
    format: str
    quality: int | None
    max_pixels: int
    # Neither limit changes the pixels of an accepted image: both stay out of the identity.
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": list(self.sizes),
            "format": self.format,
            "quality": self.quality,
            "max_pixels": self.max_pixels,
            "max_memory_mb": self.max_memory_mb,
        }


class ThumbnailFunction:
    """Fit within a box, keeping the aspect ratio; several sizes from one decode."""

    name = "thumbnail"
    code_module = "owdedup.runtime.thumbnail"  # the code whose digest is part of the identity
    libraries = ("pillow",)
    parameters = ("sizes", "size", "format", "quality", "max_pixels", "max_memory_mb")
    requirements = ("pillow",)

    def normalise(self, params: Mapping[str, Any]) -> ThumbnailParams:
        # An empty value is "not given": manifest inputs bound to unset variables arrive as "".
        given = [params.get(name) for name in ("sizes", "size")]
        sizes = parse_sizes(next((v for v in given if v not in (None, "")), DEFAULT_SIZES))
        fmt = _FORMAT_ALIASES.get(str(params.get("format") or "jpeg").strip().lower())
        if fmt is None:
            raise ConfigError(
                f"unsupported format {params.get('format')!r}; choose jpeg, png or webp"
            )
        quality: int | None = None
        if fmt != "png":  # PNG is lossless: quality would only split identical outputs
            quality = _int_param(params, "quality", DEFAULT_QUALITY, 1, 100)
        max_pixels = _int_param(params, "max_pixels", DEFAULT_MAX_PIXELS, 1, 1 << 40)
        max_memory_mb = _int_param(params, "max_memory_mb", DEFAULT_MAX_MEMORY_MB, 1, 1 << 20)
        return ThumbnailParams(sizes, fmt, quality, max_pixels, max_memory_mb)

    def variants(self, params: ThumbnailParams) -> list[Variant]:
        result = []
        for size in params.sizes:
            # Each size is derived from the next larger one, so its pixels depend on the whole
            # chain above it; the chain is part of its identity. A request for [256] alone
            # shares records with [256] inside [16, ..., 256], not with [256, 512].
            chain = sorted(s for s in params.sizes if s >= size)
            identity_params = {"chain": chain, "format": params.format, "quality": params.quality}
            result.append(Variant(
                str(size), size, identity_of(self, identity_params), _EXTENSIONS[params.format],
                summary={"size": size, "format": params.format, "quality": params.quality},
            ))
        return result

    def check_input(
        self, read_prefix: Callable[[int], bytes], size: int, params: ThumbnailParams, *,
        name: str,
    ) -> None:
        # Not an image, or over the pixel or memory limits (its own bytes counted): refused
        # having cost HEADER_BYTES, not the body.
        from owdedup.runtime.thumbnail import HEADER_BYTES, check_header  # Pillow

        check_header(
            read_prefix(HEADER_BYTES), size, params.sizes,
            max_pixels=params.max_pixels, max_memory_mb=params.max_memory_mb, name=name,
        )

    def compute(
        self, data: bytes, params: ThumbnailParams, *, name: str
    ) -> dict[str, Produced]:
        from owdedup.runtime.thumbnail import make_thumbnails  # Pillow, on a miss only

        thumbs = make_thumbnails(
            data, params.sizes, fmt=params.format, quality=params.quality,
            max_pixels=params.max_pixels, max_memory_mb=params.max_memory_mb, name=name,
        )
        return {str(t.size): Produced(t.data, t.content_type, t.width, t.height)
                for t in thumbs}


def parse_sizes(value: Any) -> tuple[int, ...]:
    """Sizes from 256, "256", "16,32,64" or [16, 32]: unique, largest first."""
    items: list[Any]
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, str):
        items = [part for part in value.replace(" ", "").split(",") if part]
    else:
        raise ConfigError(f"bad size {value!r}: give an integer or a comma-separated list")
    sizes: set[int] = set()
    for item in items:
        try:
            size = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"bad size {item!r}: not an integer") from None
        if isinstance(item, bool) or not 1 <= size <= MAX_SIZE:
            raise ConfigError(f"bad size {item!r}: must be between 1 and {MAX_SIZE}")
        sizes.add(size)
    if not sizes:
        raise ConfigError("no size given")
    return tuple(sorted(sizes, reverse=True))


def _int_param(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name, default)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"bad {name} {raw!r}: not an integer") from None
    if isinstance(raw, bool) or not low <= value <= high:
        raise ConfigError(f"bad {name} {raw!r}: must be between {low} and {high}")
    return value
