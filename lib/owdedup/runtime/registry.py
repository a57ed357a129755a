"""A small explicit registry of backends by URL scheme (as joblib registers store backends).

Backends are named as ``"module:Class"`` strings and imported only when a URL selects them,
so an action never imports a client it does not use. An unknown scheme fails with the list
of the choices. (Functions are registered by name the same way: ``owdedup.runtime.functions``.)
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar, cast
from urllib.parse import urlsplit

from owdedup.runtime.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, base: type, backends: Mapping[str, str]) -> None:
        # `base` is the abstract interface (mypy will not take an abstract class as type[T]).
        self.kind = kind
        self.base = base
        self._backends = dict(backends)

    def schemes(self) -> list[str]:
        return sorted(self._backends)

    def targets(self) -> list[str]:
        """Every ``module:Class`` this registry may import (the zip planner ships them)."""
        return sorted(set(self._backends.values()))

    def register(self, scheme: str, target: str) -> None:
        """Register ``module:Class`` for *scheme* (for third-party backends)."""
        check_target(target)
        self._backends[scheme] = target

    def resolve(self, url: str, scheme: str) -> type[T]:
        target = self._backends.get(scheme)
        if target is None:
            raise ConfigError(
                f"unknown {self.kind} scheme {scheme!r} in {redact_url(url)}; "
                f"choose one of: {', '.join(self.schemes())}"
            )
        backend = import_target(target)
        if not (isinstance(backend, type) and issubclass(backend, self.base)):
            raise ConfigError(f"{target} is not a {self.base.__name__}")
        return cast("type[T]", backend)


def check_target(target: str) -> None:
    """A target names a module and an attribute: ``"package.module:Name"``."""
    module_name, sep, attribute = target.partition(":")
    if not (module_name and sep and attribute.isidentifier()):
        raise ConfigError(f"target must look like 'module:Class', got {target!r}")


def import_target(target: str) -> object:
    """The object ``"module:Name"`` names, imported now; a clear error if it is not there."""
    check_target(target)
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise  # the module is there but lacks a dependency: a packaging bug, not a typo
        raise ConfigError(f"cannot import {target}: no module {exc.name}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"cannot import {target}: {module_name} has no {attribute}") from None


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a credential in *text* with ``***``.

    Longest first, so that a secret containing another (a password that starts with the
    user name) is hidden whole; values shorter than 3 characters are left alone, as hiding
    them would mangle the message without protecting anything.
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """Drop any ``user:password@`` and query string from *url* so it can be shown in messages
    and logs (a query may carry ``?apikey=...``)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.query:
        parts = parts._replace(query="***")
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        parts = parts._replace(netloc=f"***@{host}" + (f":{parts.port}" if parts.port else ""))
    return parts.geturl()
