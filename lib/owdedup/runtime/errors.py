"""Errors that carry what the caller needs to report them in one line.

Every error names the object it concerns (when there is one) and the cause. The action
wrappers and the CLI translate them in one place each; nothing else formats errors.
"""

from __future__ import annotations


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
