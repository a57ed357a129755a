"""The folder store's digest cache: SHA-256 of local files, kept beside the store's root.

A local file, unlike an S3 object, can be rewritten in place, and its size and mtime can be
put back afterwards (``os.utime``, ``touch -r``, ``cp -p``, ``rsync -t``). A digest is
therefore bound to the file's device and inode, size, mtime *and ctime*: the kernel sets
ctime on every change of content or metadata, and no call lets a user set it back. An entry
whose values do not all match is never used.

The digests live in ``<root>/.owdedup-cache/digests.sqlite``, not in an extended attribute
of the file: writing an attribute changes the file's ctime, so the attribute could never
describe the ctime it leaves behind. The folder is created ``0700`` and is trusted only
while it is this user's, not a symlink, and writable by nobody else: a cache someone else
could write would let them choose the digest of a file they cannot change. A cache that is
unusable (read-only root, no SQLite, a foreign folder) only means hashing again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from pathlib import Path

from owdedup.runtime.digest import is_sha256_hex

log = logging.getLogger("owdedup")

CACHE_DIR = ".owdedup-cache"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS digests (
    dev     INTEGER NOT NULL,
    ino     INTEGER NOT NULL,
    version TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    PRIMARY KEY (dev, ino)
) WITHOUT ROWID;
"""


def file_version(st: os.stat_result) -> str:
    """What a digest is bound to: device, inode, size, mtime and ctime (ns)."""
    return f"{st.st_dev}:{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


class DigestCache:
    def __init__(self, root: Path) -> None:
        self.folder = root / CACHE_DIR
        self._local = threading.local()
        self._broken = False

    def get(self, st: os.stat_result) -> str | None:
        """The digest of the file described by *st*, if it was taken of this very version."""
        conn = self._conn(create=False)
        if conn is None:
            return None
        try:
            row = conn.execute(
                "SELECT version, sha256 FROM digests WHERE dev = ? AND ino = ?",
                (st.st_dev, st.st_ino),
            ).fetchone()
        except sqlite3.Error as exc:
            self._give_up(exc)
            return None
        if row is None or row[0] != file_version(st) or not is_sha256_hex(row[1]):
            return None
        return str(row[1])

    def put(self, st: os.stat_result, sha256: str) -> None:
        """Remember *sha256* for the file version *st* (taken before it was hashed)."""
        conn = self._conn(create=True)
        if conn is None:
            return
        try:
            conn.execute(
                "INSERT OR REPLACE INTO digests (dev, ino, version, sha256) VALUES (?, ?, ?, ?)",
                (st.st_dev, st.st_ino, file_version(st), sha256),
            )
        except sqlite3.Error as exc:
            self._give_up(exc)

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None

    def _conn(self, *, create: bool) -> sqlite3.Connection | None:
        if self._broken:
            return None
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        if create:
            try:
                self.folder.mkdir(mode=0o700)
            except FileExistsError:
                pass
            except OSError:
                return None  # a read-only root: no cache, hash every time
        if not self._private():
            return None
        try:
            conn = sqlite3.connect(self.folder / "digests.sqlite", timeout=10.0,
                                   isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # a lost entry is one hash more
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._give_up(exc)
            return None
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _private(self) -> bool:
        try:
            st = os.lstat(self.folder)
        except OSError:
            return False
        return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
                and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))

    def _give_up(self, exc: sqlite3.Error) -> None:
        log.debug("digest cache in %s disabled: %s", self.folder, exc)
        self._broken = True
