"""Object stores: one interface, one module per backend, chosen by URL through a registry.

    store = open_store("file:///data")          # local folder, one sub-folder per bucket
    store = open_store("/data")                 # same: a bare path means a local folder
    store = open_store("http://127.0.0.1:9000", {"access_key": ..., "secret_key": ...})

Backend modules are imported only when a URL asks for them, so the hit-path actions never
import a client they do not use.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from owdedup.runtime.errors import ConfigError
from owdedup.runtime.registry import Registry
from owdedup.runtime.stores.base import ObjectInfo, ObjectStore

__all__ = ["ObjectInfo", "ObjectStore", "open_store", "registry"]

registry: Registry[ObjectStore] = Registry("object store", ObjectStore, {
    "file": "owdedup.runtime.stores.folder:FolderStore",
    **dict.fromkeys(("http", "https", "s3"), "owdedup.runtime.stores.s3:S3Store"),
})


def open_store(url: str, options: Mapping[str, str] | None = None) -> ObjectStore:
    """Open the object store named by *url*; *options* carries credentials and settings."""
    if not url:
        raise ConfigError("object store URL is empty")
    scheme = urlsplit(url).scheme if "://" in url else "file"
    return registry.resolve(url, scheme).from_url(url, dict(options or {}))
