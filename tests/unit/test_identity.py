from __future__ import annotations

import pytest

from owdedup.runtime import identity
from owdedup.runtime.errors import ConfigError
from owdedup.runtime.functions.thumbnail import ThumbnailFunction, parse_sizes

SPEC = ThumbnailFunction()


def ids(**params: object) -> list[str]:
    return [v.function_id for v in SPEC.variants(SPEC.normalise(params))]


def test_equal_requests_have_equal_identities() -> None:
    assert ids(size=256) == ids(sizes=[256]) == ids(sizes="256", format="JPG", quality="85")


def test_empty_values_mean_not_given() -> None:
    # Manifest inputs bound to unset variables arrive as "": they must not mask a real value.
    assert ids(sizes="", size=128) == ids(size=128)
    assert ids(sizes="", format="", quality="") == ids()


@pytest.mark.parametrize(
    "changed",
    [{"size": 128}, {"format": "webp"}, {"format": "png"}, {"quality": 70}],
)
def test_every_output_affecting_parameter_changes_the_identity(changed: dict[str, object]) -> None:
    base = {"size": 256, "format": "jpeg", "quality": 85}
    assert ids(**base) != ids(**{**base, **changed})


def test_png_ignores_quality() -> None:
    assert ids(size=64, format="png", quality=10) == ids(size=64, format="png", quality=90)


def test_max_pixels_is_not_part_of_the_identity() -> None:
    assert ids(size=64, max_pixels=1000) == ids(size=64, max_pixels=2000)


def test_max_memory_mb_is_not_part_of_the_identity() -> None:
    # A resource limit: it decides whether an image is accepted, never its output pixels.
    assert ids(size=64, max_memory_mb=16) == ids(size=64, max_memory_mb=4096) == ids(size=64)


def test_size_identity_depends_on_its_derivation_chain() -> None:
    alone = dict(zip([64], ids(size=64), strict=True))
    with_larger = dict(zip([128, 64], ids(sizes=[64, 128]), strict=True))
    with_smaller = dict(zip([64, 32], ids(sizes=[32, 64]), strict=True))
    assert alone[64] != with_larger[64]  # derived from the 128 result: other pixels
    assert alone[64] == with_smaller[64]  # smaller sizes do not change how 64 is made


def test_code_change_changes_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    before = ids(size=64)
    monkeypatch.setattr(identity, "code_digest", lambda module: "0" * 64)
    assert ids(size=64) != before


def test_library_version_change_changes_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    before = ids(size=64)
    monkeypatch.setattr(identity, "library_version", lambda dist: "0.0.1")
    assert ids(size=64) != before


def test_pinned_versions_override_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    identity.library_version.cache_clear()
    monkeypatch.setattr(identity, "_pinned_versions", lambda: {"pillow": "9.9.9"})
    try:
        assert identity.library_version("pillow") == "9.9.9"
    finally:
        identity.library_version.cache_clear()


def test_code_digest_does_not_import_the_module() -> None:
    import sys

    sys.modules.pop("owdedup.runtime.thumbnail", None)
    identity.code_digest.cache_clear()
    identity.code_digest("owdedup.runtime.thumbnail")
    assert "owdedup.runtime.thumbnail" not in sys.modules


@pytest.mark.parametrize(
    ("value", "expected"),
    [(256, (256,)), ("16,32, 64", (64, 32, 16)), ([32, 16, 32], (32, 16)), ("8", (8,))],
)
def test_parse_sizes(value: object, expected: tuple[int, ...]) -> None:
    assert parse_sizes(value) == expected


@pytest.mark.parametrize("value", [0, -1, 5000, "abc", "", [], True, 3.5j, None])
def test_bad_sizes_are_refused(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_sizes(value)


@pytest.mark.parametrize(
    "params", [{"format": "gif"}, {"quality": 0}, {"quality": "high"}, {"max_pixels": -5},
               {"max_memory_mb": 0}, {"max_memory_mb": "lots"}]
)
def test_bad_parameters_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SPEC.normalise(params)
