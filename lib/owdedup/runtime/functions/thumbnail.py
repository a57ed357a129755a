"""The functions owdedup can deduplicate, and how their parameters become identities.

A function here is pure: its output depends only on the input bytes, the function's code,
its normalised output-affecting parameters and the versions of the libraries it runs on.
Each request yields one or more *variants* (for thumbnails: one per size); each variant has
its own identity, its own deterministic output name and its own record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from owdedup.runtime.errors import ConfigError
from owdedup.runtime.identity import function_identity

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
class Variant:
    """One output of a request: its label, identity and deterministic output key."""

    label: str
    size: int
    function_id: str
    extension: str

    def output_key(self, function: str, input_digest: str) -> str:
        # (function identity, input digest) -> one name: concurrent misses of the same content
        # write the same object, so no orphan can be left behind.
        return f"{function}/{self.label}/{self.function_id}/{input_digest}{self.extension}"


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
    name = "thumbnail"
    module = "owdedup.runtime.thumbnail"  # the code whose digest is part of the identity
    libraries = ("pillow",)
    sequence = "dedup-thumbnail"

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

    def variants(self, p: ThumbnailParams) -> list[Variant]:
        result = []
        for size in p.sizes:
            # Each size is derived from the next larger one, so its pixels depend on the whole
            # chain above it; the chain is part of its identity. A request for [256] alone
            # shares records with [256] inside [16, ..., 256], not with [256, 512].
            chain = sorted(s for s in p.sizes if s >= size)
            identity_params = {"chain": chain, "format": p.format, "quality": p.quality}
            function_id = function_identity(
                self.name, self.module, self.libraries, identity_params
            )
            result.append(Variant(str(size), size, function_id, _EXTENSIONS[p.format]))
        return result


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


FUNCTIONS: dict[str, ThumbnailFunction] = {"thumbnail": ThumbnailFunction()}


def get_function(name: str) -> ThumbnailFunction:
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown function {name!r}; choose one of: {', '.join(sorted(FUNCTIONS))}"
        ) from None
