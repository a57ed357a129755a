"""Content digests: SHA-256 over streams in bounded memory, and canonical-JSON hashing.

SHA-256 rather than MD5 or an S3 ETag: MD5 collisions can be crafted, so two different inputs
could otherwise share one cached output.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, BinaryIO

CHUNK_BYTES = 1 << 20  # 1 MiB reads: large enough to amortise syscalls, small enough for 64 MB RAM


def is_sha256_hex(value: object) -> bool:
    """True when *value* looks like a lowercase hex SHA-256 digest."""
    return (
        isinstance(value, str)
        and len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
    )


def sha256_stream(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> tuple[str, int]:
    """Return (hex digest, byte count) of everything left in *stream*, chunk by chunk."""
    hasher = hashlib.sha256()
    total = 0
    while chunk := stream.read(chunk_bytes):
        hasher.update(chunk)
        total += len(chunk)
    return hasher.hexdigest(), total


def canonical_json(value: Any) -> str:
    """Serialise *value* so that equal values always give equal text (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def hash_canonical(value: Any) -> str:
    """SHA-256 of the canonical JSON of *value*."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()
