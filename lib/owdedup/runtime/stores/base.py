"""The object-store interface every backend implements.

Buckets and keys follow S3's model: a flat namespace of keys (which may contain ``/``) per
bucket. Objects are immutable once written: ``put`` replaces an object atomically, so a
reader never sees a partial object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

from owdedup.runtime.digest import sha256_stream
from owdedup.runtime.errors import StoreError


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD tells about an object. ``sha256`` is set only when the store holds a
    checksum it guarantees to match the content (then ``hash`` never reads the body)."""

    bucket: str
    key: str
    size: int
    sha256: str | None = None
    content_type: str | None = None
    #: What identifies this version of the object to its store (the folder store: size and
    #: mtime), so a digest taken from it is never remembered for content written after.
    version: str | None = None


def read_at_most(stream: BinaryIO, length: int) -> bytes:
    """Up to *length* bytes from *stream*, fewer only at its end (``read(n)`` of a socket or
    an HTTP body may return less than asked before the end)."""
    parts: list[bytes] = []
    left = length
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


class ObjectStore(ABC):
    """Abstract object store. Methods raise ``NotFoundError`` for a missing bucket or object,
    ``ConfigError`` for an invalid name and ``StoreError`` for backend failures."""

    #: URL scheme(s) this backend is registered under (informational).
    scheme: str = ""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, options: Mapping[str, str]) -> ObjectStore:
        """Build the store from its URL and options (credentials come only from options)."""

    @abstractmethod
    def head(self, bucket: str, key: str) -> ObjectInfo:
        """Metadata of one object, without reading its body."""

    @abstractmethod
    def open(self, bucket: str, key: str) -> AbstractContextManager[BinaryIO]:
        """A streaming reader over the object's body."""

    @abstractmethod
    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
    ) -> ObjectInfo:
        """Write *data* atomically; *sha256*, when given, is stored as the object's checksum."""

    @abstractmethod
    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> ObjectInfo:
        """Copy an object inside the store (server-side where the backend supports it)."""

    @abstractmethod
    def delete(self, bucket: str, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""

    @abstractmethod
    def list(
        self, bucket: str, prefix: str = "", *,
        on_unreadable: Callable[[str, str], None] | None = None,
    ) -> Iterator[ObjectInfo]:
        """Every object under *prefix*, in key order.

        A part of the bucket that cannot be read (a folder store's unreadable sub-folder) is
        never skipped silently: ``on_unreadable(name, cause)`` is called for it, or, without
        that callback, the listing raises ``StoreError``.
        """

    @abstractmethod
    def ensure_bucket(self, bucket: str) -> None:
        """Create *bucket* if it does not exist."""

    @abstractmethod
    def bucket_exists(self, bucket: str) -> bool:
        """True when *bucket* exists."""

    # Derived operations: backends may override them with something cheaper.

    def remember_sha256(self, info: ObjectInfo, sha256: str) -> None:  # noqa: B027
        """Keep a computed digest with the object so the next ``head`` returns it.

        Optional: the default does nothing (S3 checksums can only be set at upload time).
        """

    def content_sha256(
        self, bucket: str, key: str, info: ObjectInfo | None = None
    ) -> tuple[ObjectInfo, str, str]:
        """(HEAD, SHA-256 of the content, ``"checksum"`` or ``"computed"``): the store's own
        checksum when it holds one (the body is not read), else a streamed hash in bounded
        memory, remembered for the next time where the backend can. *info*: a HEAD the
        caller has just made."""
        info = self.head(bucket, key) if info is None else info
        if info.sha256 is not None:
            return info, info.sha256, "checksum"
        with self.open(bucket, key) as stream:
            digest, size = sha256_stream(stream)
        if size != info.size:
            raise StoreError("object changed while it was being hashed", key=key)
        self.remember_sha256(info, digest)
        return info, digest, "computed"

    def exists(self, bucket: str, key: str) -> bool:
        from owdedup.runtime.errors import NotFoundError

        try:
            self.head(bucket, key)
        except NotFoundError:
            return False
        return True

    def read_bytes(self, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
        """The whole object; with *max_bytes*, refused (``StoreError``) once it holds more,
        after reading no more than one byte past the limit."""
        with self.open(bucket, key) as stream:
            if max_bytes is None:
                return stream.read()
            data = read_at_most(stream, max_bytes + 1)
        if len(data) > max_bytes:
            raise StoreError(
                f"object {bucket}/{key} holds more than the {max_bytes} bytes expected "
                "(it changed since it was listed or hashed)", key=None)
        return data

    def read_prefix(self, bucket: str, key: str, length: int) -> bytes:
        """The object's first *length* bytes (all of it when it is shorter): what a reader
        needs to judge a header without holding the body. Backends with ranged reads
        override it so no more than *length* bytes are even sent."""
        with self.open(bucket, key) as stream:
            return read_at_most(stream, length)

    def describe(self) -> str:
        """A short, credential-free description for logs and messages."""
        return self.scheme

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections."""
