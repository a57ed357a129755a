"""Object stores: one interface, one module per backend, chosen by URL through a registry.

    store = open_store("file:///data")          # local folder, one sub-folder per bucket
    store = open_store("/data")                 # same: a bare path means a local folder

Backends register their URL schemes in ``_BACKENDS``; modules are imported only when a URL
asks for them, so the hit-path actions never import a client they do not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from urllib.parse import urlsplit

from owdedup.errors import ConfigError
from owdedup.stores.base import ObjectInfo, ObjectStore

__all__ = ["ObjectInfo", "ObjectStore", "available_schemes", "open_store"]

# scheme -> "module:Class". Explicit, so an unknown scheme fails with the list of choices.
_BACKENDS: dict[str, str] = {
    "file": "owdedup.stores.folder:FolderStore",
    **dict.fromkeys(("http", "https", "s3"), "owdedup.stores.s3:S3Store"),
}


def available_schemes() -> list[str]:
    return sorted(_BACKENDS)


def register_backend(scheme: str, target: str) -> None:
    """Register ``module:Class`` for *scheme* (for third-party backends)."""
    if ":" not in target:
        raise ConfigError(f"backend target must look like 'module:Class', got {target!r}")
    _BACKENDS[scheme] = target


def open_store(url: str, options: Mapping[str, str] | None = None) -> ObjectStore:
    """Open the object store named by *url*; *options* carries credentials and settings."""
    if not url:
        raise ConfigError("object store URL is empty")
    scheme = urlsplit(url).scheme if "://" in url else "file"
    target = _BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(
            f"unknown object store scheme {scheme!r} in {redact_url(url)}; "
            f"choose one of: {', '.join(available_schemes())}"
        )
    module_name, class_name = target.split(":")
    backend: type[ObjectStore] = getattr(importlib.import_module(module_name), class_name)
    return backend.from_url(url, dict(options or {}))


def redact_url(url: str) -> str:
    """Drop any ``user:password@`` from *url* so it can be shown in messages and logs."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
