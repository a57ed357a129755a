"""Record stores: input digest + function identity -> stored output, behind one interface.

    records = open_records("sqlite:///var/lib/owdedup/records.sqlite")
    records = open_records("http://127.0.0.1:5984/owdedup", {"username": ..., "password": ...})

Backend modules are imported only when a URL asks for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from owdedup.runtime.errors import ConfigError
from owdedup.runtime.records.base import FunctionStats, Lease, OutputRef, Record, RecordStore
from owdedup.runtime.registry import Registry

__all__ = [
    "FunctionStats", "Lease", "OutputRef", "Record", "RecordStore", "open_records", "registry",
]

registry: Registry[RecordStore] = Registry("record store", RecordStore, {
    "sqlite": "owdedup.runtime.records.sqlite:SqliteRecordStore",
    **dict.fromkeys(("http", "https", "couchdb", "cloudant"),
                    "owdedup.runtime.records.couchdb:CouchRecordStore"),
})


def open_records(url: str, options: Mapping[str, str] | None = None) -> RecordStore:
    """Open the record store named by *url*; *options* carries credentials and settings."""
    if not url or "://" not in url:
        raise ConfigError(
            f"record store URL {url!r} needs a scheme, e.g. sqlite:///path/records.sqlite"
        )
    return registry.resolve(url, urlsplit(url).scheme).from_url(url, dict(options or {}))
