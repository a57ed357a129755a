"""Errors that carry what the caller needs to report them in one line.

Every error names the object it concerns (when there is one) and the cause. The action
wrappers and the CLI translate them in one place each; nothing else formats errors.
"""

from __future__ import annotations

from typing import Any


class OwdedupError(Exception):
    """Base class: an expected failure with a one-line message (never a traceback)."""

    #: Short machine-readable category, stable across releases (used in results).
    kind = "error"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.key}: {message}" if self.key else message


class ConfigError(OwdedupError):
    """A bad URL, parameter or setting supplied by the user."""

    kind = "bad-parameter"


class NotFoundError(OwdedupError):
    """A missing bucket or object."""

    kind = "not-found"


class BadInputError(OwdedupError):
    """The object exists but cannot be processed (not an image, corrupt, too large, ...)."""

    kind = "bad-input"


class StoreError(OwdedupError):
    """A storage backend failed (I/O error, service unreachable)."""

    kind = "store-error"


def error_result(exc: OwdedupError, params: dict[str, Any]) -> dict[str, Any]:
    """``{"error": "<key>: <cause>", ...}``: names the object and the cause, nothing secret."""
    key = params.get("key") if isinstance(params.get("key"), str) else None
    bucket = params.get("bucket") if isinstance(params.get("bucket"), str) else None
    message = str(exc)
    if key and exc.key is None:
        message = f"{key}: {message}"
    result: dict[str, Any] = {"error": message, "error_kind": exc.kind, "bucket": bucket,
                              "key": key}
    if getattr(exc, "recorded", False):  # answered from a negative record, not read again
        result["recorded_failure"] = True
    return result
