"""Local folder backend: ``file:///root`` (or a bare path); each bucket is a sub-folder.

Keys map to relative paths. Keys that could leave the root (``..`` segments, absolute paths,
NUL bytes, empty segments) are rejected. Writes go to a temporary file in the target folder
and are renamed into place, so readers see the old object or the new one, never a partial one.

The digest cache: a computed SHA-256 is kept in a user extended attribute together with the
file's size and mtime, and trusted only while both still match (a local file, unlike an S3
object, can be rewritten in place). Filesystems without xattrs simply never hit the cache.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import unquote, urlsplit

from owdedup.runtime.digest import is_sha256_hex
from owdedup.runtime.errors import ConfigError, NotFoundError, StoreError
from owdedup.runtime.stores.base import ObjectInfo, ObjectStore

_XATTR = "user.owdedup.sha256"
_TEMP_MARK = ".owdedup-tmp-"


def _check_bucket(bucket: str) -> None:
    if (
        not bucket
        or "/" in bucket
        or "\\" in bucket
        or "\x00" in bucket
        or bucket.startswith(".")
    ):
        raise ConfigError(f"invalid bucket name {bucket!r}")


def _check_key(key: str) -> list[str]:
    if not key or "\x00" in key or key.startswith("/") or "\\" in key:
        raise ConfigError(f"invalid object key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ConfigError(f"invalid object key {key!r}: empty, '.' or '..' segment")
    if any(part.startswith(".") and _TEMP_MARK in part for part in parts):
        raise ConfigError(f"invalid object key {key!r}: reserved name")
    return parts


class FolderStore(ObjectStore):
    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, str]) -> FolderStore:
        path = unquote(urlsplit(url).path) if url.startswith("file://") else url
        if url.startswith("file://") and urlsplit(url).netloc not in ("", "localhost", "."):
            # file://./relative is a common spelling of a relative path
            path = urlsplit(url).netloc + path
        return cls(Path(path or "."))

    def describe(self) -> str:
        return f"file://{self.root}"

    # -- paths ---------------------------------------------------------------------------

    def _bucket_path(self, bucket: str) -> Path:
        _check_bucket(bucket)
        return self.root / bucket

    def _object_path(self, bucket: str, key: str) -> Path:
        parts = _check_key(key)
        return self._bucket_path(bucket).joinpath(*parts)

    def _require_bucket(self, bucket: str) -> Path:
        path = self._bucket_path(bucket)
        if not path.is_dir():
            raise NotFoundError(f"bucket {bucket!r} does not exist in {self.describe()}")
        return path

    # -- reads ---------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo:
        path = self._object_path(bucket, key)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._require_bucket(bucket)
            raise NotFoundError(f"object {bucket}/{key} does not exist", key=None) from None
        except OSError as exc:
            raise StoreError(f"cannot stat {bucket}/{key}: {exc.strerror}") from exc
        if not path.is_file():
            raise NotFoundError(f"object {bucket}/{key} does not exist (not a file)")
        return ObjectInfo(bucket, key, st.st_size, sha256=_cached_digest(path, st),
                          version=_version(st))

    def open(self, bucket: str, key: str) -> AbstractContextManager[BinaryIO]:
        path = self._object_path(bucket, key)
        try:
            return cast(BinaryIO, path.open("rb"))
        except (FileNotFoundError, IsADirectoryError):
            self._require_bucket(bucket)
            raise NotFoundError(f"object {bucket}/{key} does not exist") from None
        except OSError as exc:
            raise StoreError(f"cannot read {bucket}/{key}: {exc.strerror}") from exc

    def list(
        self, bucket: str, prefix: str = "", *,
        on_unreadable: Callable[[str, str], None] | None = None,
    ) -> Iterator[ObjectInfo]:
        base = self._require_bucket(bucket)
        entries: list[tuple[str, os.stat_result]] = []

        def unreadable(exc: OSError) -> None:  # os.walk would skip the folder silently
            rel = os.path.relpath(exc.filename or base, base).replace(os.sep, "/")
            name = "" if rel == "." else f"{rel}/"
            if not (name.startswith(prefix) or prefix.startswith(name)):
                return  # outside the listing anyway
            cause = exc.strerror or str(exc)
            if on_unreadable is None:
                raise StoreError(f"cannot list folder {bucket}/{name}: {cause}")
            on_unreadable(name or "./", f"cannot list folder {bucket}/{name}: {cause}")

        for dirpath, dirnames, filenames in os.walk(base, onerror=unreadable):
            # Hidden folders and files (our temp files among them) are not objects.
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, base)
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    try:
                        entries.append((key, Path(dirpath, name).stat()))
                    except FileNotFoundError:  # removed while listing
                        continue
        for key, st in sorted(entries, key=lambda e: e[0]):
            yield ObjectInfo(bucket, key, st.st_size)

    def bucket_exists(self, bucket: str) -> bool:
        return self._bucket_path(bucket).is_dir()

    # -- writes --------------------------------------------------------------------------

    def ensure_bucket(self, bucket: str) -> None:
        self._bucket_path(bucket).mkdir(parents=True, exist_ok=True)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
    ) -> ObjectInfo:
        path = self._object_path(bucket, key)
        self._require_bucket(bucket)

        def write(tmp: Path) -> None:
            tmp.write_bytes(data)

        st = self._publish(path, write, f"{bucket}/{key}", sha256)
        return ObjectInfo(bucket, key, st.st_size, sha256=sha256, content_type=content_type,
                          version=_version(st))

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> ObjectInfo:
        src = self._object_path(src_bucket, src_key)
        info = self.head(src_bucket, src_key)
        dst = self._object_path(dst_bucket, dst_key)
        self._require_bucket(dst_bucket)

        def write(tmp: Path) -> None:
            shutil.copyfile(src, tmp)

        st = self._publish(dst, write, f"{dst_bucket}/{dst_key}", info.sha256)
        return ObjectInfo(dst_bucket, dst_key, st.st_size, sha256=info.sha256)

    def delete(self, bucket: str, key: str) -> None:
        path = self._object_path(bucket, key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot delete {bucket}/{key}: {exc.strerror}") from exc

    def remember_sha256(self, info: ObjectInfo, sha256: str) -> None:
        path = self._object_path(info.bucket, info.key)
        try:
            st = path.stat()
            # Only if the file is still the one that was hashed (it may be rewritten in place).
            if info.version is not None and _version(st) == info.version:
                _set_digest_xattr(path, sha256, st)
        except OSError:
            return  # a cache that cannot be written is only a slower cache

    def _publish(
        self, path: Path, write: Callable[[Path], None], name: str, sha256: str | None
    ) -> os.stat_result:
        """Write through *write* into a temp file beside *path*, then rename it into place."""
        tmp = path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            st = tmp.stat()
            if sha256 is not None:
                _set_digest_xattr(tmp, sha256, st)
            tmp.replace(path)
        except (NotADirectoryError, FileExistsError) as exc:
            _remove_quietly(tmp)
            raise ConfigError(f"cannot write {name}: a parent of the key is an object") from exc
        except OSError as exc:
            _remove_quietly(tmp)
            raise StoreError(f"cannot write {name}: {exc.strerror or exc}") from exc
        return st


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        return  # never created, or its folder is gone: nothing to clean


def _version(st: os.stat_result) -> str:
    """The file's version as "size mtime_ns" (also the tail of the digest xattr)."""
    return f"{st.st_size} {st.st_mtime_ns}"


def _set_digest_xattr(path: Path, sha256: str, st: os.stat_result) -> None:
    value = f"{sha256} {_version(st)}".encode("ascii")
    try:
        os.setxattr(path, _XATTR, value)
    except OSError:
        return  # no xattr support here: the digest will be recomputed next time


def _cached_digest(path: Path, st: os.stat_result) -> str | None:
    try:
        raw = os.getxattr(path, _XATTR).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    digest, _, version = raw.partition(" ")
    if not is_sha256_hex(digest):
        return None
    if version != _version(st):
        return None  # the file changed since the digest was taken (or the value is malformed)
    return digest
