"""Record stores: input digest + function identity -> stored output, behind one interface.

    records = open_records("sqlite:///var/lib/owdedup/records.sqlite")

Backends are registered by URL scheme in ``_BACKENDS`` and imported only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from urllib.parse import urlsplit

from owdedup.errors import ConfigError
from owdedup.records.base import FunctionStats, OutputRef, Record, RecordStore
from owdedup.stores import redact_url

__all__ = ["FunctionStats", "OutputRef", "Record", "RecordStore", "open_records"]

_BACKENDS: dict[str, str] = {
    "sqlite": "owdedup.records.sqlite:SqliteRecordStore",
    "http": "owdedup.records.couchdb:CouchRecordStore",
    "https": "owdedup.records.couchdb:CouchRecordStore",
    "couchdb": "owdedup.records.couchdb:CouchRecordStore",
    "cloudant": "owdedup.records.couchdb:CouchRecordStore",
}


def available_schemes() -> list[str]:
    return sorted(_BACKENDS)


def register_backend(scheme: str, target: str) -> None:
    if ":" not in target:
        raise ConfigError(f"backend target must look like 'module:Class', got {target!r}")
    _BACKENDS[scheme] = target


def open_records(url: str, options: Mapping[str, str] | None = None) -> RecordStore:
    """Open the record store named by *url*; *options* carries credentials and settings."""
    if not url or "://" not in url:
        raise ConfigError(
            f"record store URL {url!r} needs a scheme, e.g. sqlite:///path/records.sqlite"
        )
    scheme = urlsplit(url).scheme
    target = _BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(
            f"unknown record store scheme {scheme!r} in {redact_url(url)}; "
            f"choose one of: {', '.join(available_schemes())}"
        )
    module_name, class_name = target.split(":")
    backend: type[RecordStore] = getattr(importlib.import_module(module_name), class_name)
    return backend.from_url(url, dict(options or {}))
