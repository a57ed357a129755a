"""Local folder backend: ``file:///root`` (or a bare path); each bucket is a sub-folder.

Keys map to relative paths. Keys that could leave the root (``..`` segments, absolute paths,
NUL bytes, empty segments) are rejected, and so are symbolic links inside a bucket: every
path is walked one folder at a time with ``O_NOFOLLOW``, so neither a linked file
(``link.jpg -> /etc/passwd``) nor a linked folder is read, hashed or written through. (A
bucket folder itself may be a link: like the root, it is named by the user.) Writes go to a
temporary file in the target folder and are renamed into place (:mod:`owdedup.runtime.atomic`),
so readers see the old object or the new one, never a partial one.

Computed digests are cached in :mod:`owdedup.runtime.stores.digest_cache`, bound to the
file's inode, size, mtime and ctime.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from owdedup.runtime.atomic import TEMP_MARK, Writer, write_atomic
from owdedup.runtime.errors import BadInputError, ConfigError, NotFoundError, StoreError
from owdedup.runtime.stores.base import ObjectInfo, ObjectStore
from owdedup.runtime.stores.digest_cache import DigestCache, file_version

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under an object's name must not hang the reader.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Objects are written with the usual file mode (before the umask): they are the user's files.
_OBJECT_MODE = 0o666


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
    if any(part.startswith(".") and TEMP_MARK in part for part in parts):
        raise ConfigError(f"invalid object key {key!r}: reserved name")
    return parts


def _link_refused(name: str) -> BadInputError:
    return BadInputError(
        f"{name} is (or lies under) a symbolic link; links inside a bucket are not followed, "
        "since they can lead outside it"
    )


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


class FolderStore(ObjectStore):
    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.digests = DigestCache(self.root)

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, str]) -> FolderStore:
        path = unquote(urlsplit(url).path) if url.startswith("file://") else url
        if url.startswith("file://") and urlsplit(url).netloc not in ("", "localhost", "."):
            # file://./relative is a common spelling of a relative path
            path = urlsplit(url).netloc + path
        return cls(Path(path or "."))

    def describe(self) -> str:
        return f"file://{self.root}"

    def close(self) -> None:
        self.digests.close()

    # -- paths ---------------------------------------------------------------------------

    def _bucket_path(self, bucket: str) -> Path:
        _check_bucket(bucket)
        return self.root / bucket

    def _require_bucket(self, bucket: str) -> Path:
        path = self._bucket_path(bucket)
        if not path.is_dir():
            raise NotFoundError(f"bucket {bucket!r} does not exist in {self.describe()}")
        return path

    def _folder_fd(self, bucket: str, key: str, *, create: bool = False) -> tuple[int, str]:
        """(an open descriptor of the folder that holds *key*, the object's file name).

        Walked one component at a time without following a link; *create* makes missing
        folders (for writes). The caller closes the descriptor.
        """
        parts = _check_key(key)
        name = f"{bucket}/{key}"
        try:
            fd = os.open(self._require_bucket(bucket), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreError(f"cannot open bucket {bucket!r}: {exc.strerror}") from exc
        try:
            for part in parts[:-1]:
                if create:
                    # There already (or a file or link there: refused just below).
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    # A link met with O_NOFOLLOW | O_DIRECTORY reads as "not a folder".
                    if exc.errno == errno.ENOTDIR and _is_link(part, fd):
                        raise _link_refused(name) from None
                    if create and exc.errno == errno.ENOTDIR:
                        raise ConfigError(
                            f"cannot write {name}: a parent of the key is an object") from None
                    raise self._path_error(exc, name) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def _path_error(self, exc: OSError, name: str) -> Exception:
        if exc.errno == errno.ELOOP:
            return _link_refused(name)
        if exc.errno == errno.ENOENT:
            return NotFoundError(f"object {name} does not exist")
        if exc.errno in (errno.ENOTDIR, errno.EISDIR):
            return NotFoundError(f"object {name} does not exist (not a file)")
        return StoreError(f"cannot access {name}: {exc.strerror or exc}")

    def _open_object(self, bucket: str, key: str) -> int:
        """A descriptor of the object's regular file, never reached through a link."""
        name = f"{bucket}/{key}"
        folder, filename = self._folder_fd(bucket, key)
        try:
            fd = os.open(filename, _FILE_FLAGS, dir_fd=folder)
        except OSError as exc:
            raise self._path_error(exc, name) from None
        finally:
            os.close(folder)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise NotFoundError(f"object {name} does not exist (not a file)")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _stat_object(self, bucket: str, key: str) -> os.stat_result:
        fd = self._open_object(bucket, key)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    # -- reads ---------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo:
        st = self._stat_object(bucket, key)
        return ObjectInfo(bucket, key, st.st_size, sha256=self.digests.get(st),
                          version=file_version(st))

    def open(self, bucket: str, key: str) -> AbstractContextManager[BinaryIO]:
        return os.fdopen(self._open_object(bucket, key), "rb")

    def list(
        self, bucket: str, prefix: str = "", *,
        on_unreadable: Callable[[str, str], None] | None = None,
    ) -> Iterator[ObjectInfo]:
        """Every object under *prefix*. A link is listed as what it is named (its own size),
        so that reading it is refused with the reason instead of it being skipped silently;
        an unreadable folder is reported (see ``ObjectStore.list``)."""
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
            links = [d for d in dirnames if Path(dirpath, d).is_symlink()]
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in links]
            rel_dir = os.path.relpath(dirpath, base)
            for name in [*filenames, *links]:
                if name.startswith("."):
                    continue
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    try:
                        entries.append((key, Path(dirpath, name).lstat()))
                    except FileNotFoundError:  # removed while listing
                        continue
        for key, st in sorted(entries, key=lambda e: e[0]):
            yield ObjectInfo(bucket, key, st.st_size)

    def bucket_exists(self, bucket: str) -> bool:
        return self._bucket_path(bucket).is_dir()

    # -- writes --------------------------------------------------------------------------

    def ensure_bucket(self, bucket: str) -> None:
        path = self._bucket_path(bucket)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(
                f"cannot use {bucket!r} as a bucket: {path} exists and is not a folder"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot create bucket {bucket!r} at {path}: {exc.strerror}") \
                from exc

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
    ) -> ObjectInfo:
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
            # as S3 refuses it: a kept checksum lets `hash` trust it without reading the body
            raise StoreError(f"{self.describe()} rejected {bucket}/{key}: the data does not "
                             "match its SHA-256 checksum")
        st = self._publish(bucket, key, data, sha256)
        return ObjectInfo(bucket, key, st.st_size, sha256=sha256, content_type=content_type,
                          version=file_version(st))

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> ObjectInfo:
        with self.open(src_bucket, src_key) as source:
            # The digest of the very file opened, and only if it did not change while it was
            # copied: a source replaced or rewritten meanwhile must not lend the copy the
            # digest of content the copy does not hold.
            before = os.fstat(source.fileno())
            sha256 = self.digests.get(before)
            copied: list[bool] = []

            def write(out: BinaryIO) -> None:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
                copied.append(file_version(os.fstat(source.fileno())) == file_version(before))

            st = self._publish(dst_bucket, dst_key, write,
                               sha256 if copied == [True] else None)
        return ObjectInfo(dst_bucket, dst_key, st.st_size,
                          sha256=sha256 if copied == [True] else None)

    def delete(self, bucket: str, key: str) -> None:
        try:
            folder, filename = self._folder_fd(bucket, key)
        except NotFoundError:
            return
        try:
            os.unlink(filename, dir_fd=folder)  # a link is removed itself, never its target
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot delete {bucket}/{key}: {exc.strerror}") from exc
        finally:
            os.close(folder)

    def remember_sha256(self, info: ObjectInfo, sha256: str) -> None:
        try:
            st = self._stat_object(info.bucket, info.key)
        except (OSError, ConfigError, NotFoundError, BadInputError, StoreError):
            return  # gone or unreadable: nothing to remember
        # Only if the file is still the one that was hashed (it may be rewritten in place).
        if info.version is not None and file_version(st) == info.version:
            self.digests.put(st, sha256)

    def _publish(
        self, bucket: str, key: str, content: bytes | Writer, sha256: str | None
    ) -> os.stat_result:
        """Write *content* into a temp file beside the object, then rename it into place."""
        name = f"{bucket}/{key}"
        folder, filename = self._folder_fd(bucket, key, create=True)
        try:
            st = write_atomic(filename, content, mode=_OBJECT_MODE, dir_fd=folder)
        except IsADirectoryError as exc:
            raise ConfigError(f"cannot write {name}: a folder has that name") from exc
        except OSError as exc:
            raise StoreError(f"cannot write {name}: {exc.strerror or exc}") from exc
        finally:
            os.close(folder)
        if sha256 is not None:
            self.digests.put(st, sha256)
        return st
