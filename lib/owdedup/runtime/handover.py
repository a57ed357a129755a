"""The bytes that ``hash`` read, handed on to ``thumbnail`` when both run in one process.

On OpenWhisk each action runs in its own container: nothing is handed over there (the hand-over
is off unless a tool enables it), ``hash`` streams in bounded memory and ``thumbnail`` reads
the input again, checking its digest while it reads. The local engine (``owdedup map`` and
``invoke``) runs the whole sequence in one process: there ``hash`` keeps the bytes it has just
hashed and ``thumbnail`` takes them, so a cold object is read and hashed once.

Nothing here comes from outside the process: the bytes are the ones this process hashed, kept
in one slot, and taken only for the same store object, the same object and the same digest.
"""

from __future__ import annotations

from dataclasses import dataclass

from owdedup.runtime.stores.base import ObjectStore


@dataclass(frozen=True)
class _Kept:
    store: ObjectStore
    bucket: str
    key: str
    digest: str
    data: bytes


_limit_bytes = 0  # 0: off (an action on OpenWhisk)
_kept: _Kept | None = None


def enable(limit_bytes: int) -> None:
    """Keep inputs of up to *limit_bytes* for the next step (0 turns the hand-over off)."""
    global _limit_bytes
    _limit_bytes = limit_bytes
    clear()


def wanted(size: int) -> bool:
    """Whether ``hash`` should keep an input of *size* bytes."""
    return 0 < size <= _limit_bytes


def keep(store: ObjectStore, bucket: str, key: str, digest: str, data: bytes) -> None:
    global _kept
    _kept = _Kept(store, bucket, key, digest, data) if wanted(len(data)) else None


def take(store: ObjectStore, bucket: str, key: str, digest: str) -> bytes | None:
    """The kept bytes of exactly this object and digest (once), else None."""
    global _kept
    kept, _kept = _kept, None
    if (kept is None or kept.store is not store or (kept.bucket, kept.key, kept.digest)
            != (bucket, key, digest)):
        return None
    return kept.data


def clear() -> None:
    global _kept
    _kept = None
