"""SQLite record store: the embedded default, safe for several processes at once.

WAL journaling lets readers run while one writer commits; ``busy_timeout`` makes concurrent
writers wait instead of failing. Each process (and thread) opens its own connection, because
a SQLite connection must not cross a fork.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from owdedup.runtime.errors import ConfigError, StoreError
from owdedup.runtime.records.base import FunctionStats, Lease, Record, RecordStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    function_id  TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    function     TEXT NOT NULL,
    doc          TEXT NOT NULL,
    PRIMARY KEY (function_id, input_digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    function    TEXT PRIMARY KEY,
    hits        INTEGER NOT NULL DEFAULT 0,
    misses      INTEGER NOT NULL DEFAULT 0,
    saved_ms    REAL NOT NULL DEFAULT 0,
    saved_bytes INTEGER NOT NULL DEFAULT 0,
    coalesced   INTEGER NOT NULL DEFAULT 0,
    refused     INTEGER NOT NULL DEFAULT 0,
    took_over   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS leases (
    function_id  TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    owner        TEXT NOT NULL,
    expires_at   REAL NOT NULL,
    revision     TEXT NOT NULL,
    PRIMARY KEY (function_id, input_digest)
) WITHOUT ROWID;
"""

_LEASE_COLUMNS = "function_id, input_digest, owner, expires_at, revision"


# The distinct identities, each found by a seek past the one before (a loose index scan),
# at most ? of them.
_IDENTITIES = """
WITH RECURSIVE identities(function_id) AS (
    SELECT min(function_id) FROM records
    UNION ALL
    SELECT (SELECT min(function_id) FROM records WHERE function_id > identities.function_id)
    FROM identities WHERE function_id IS NOT NULL
    LIMIT ?
)
SELECT function_id FROM identities WHERE function_id IS NOT NULL
"""
#: Beyond this many identities a seek per identity costs more than reading the table.
_MAX_SEEKED_IDENTITIES = 1000

_INSERT = (
    "INSERT OR IGNORE INTO records (function_id, input_digest, function, doc) VALUES (?, ?, ?, ?)"
)


def _row(record: Record) -> tuple[str, str, str, str]:
    doc = json.dumps(record.to_dict(), sort_keys=True)
    return record.function_id, record.input_digest, record.function, doc


#: Page cache (KiB) while a bulk load runs, instead of the default 2 MiB: the keys are random,
#: so the rows land all over the table, and a transaction that outgrows the cache spills and
#: re-reads its pages (a 100k-record load took twice as long). Allocated only as it fills.
_BULK_CACHE_KIB = 128 * 1024

#: Function ids per lookup statement: far below SQLite's limit on bound parameters.
_IDS_PER_STATEMENT = 500


#: Counter columns added after the first release: a store made before gets them on opening.
_LATER_COUNTERS = ("coalesced", "refused", "took_over")


def _add_missing_counters(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(counters)")}
    for column in _LATER_COUNTERS:
        if column not in have:
            try:
                conn.execute(
                    f"ALTER TABLE counters ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise


def _revision() -> str:
    """A fresh revision for a lease row: every write changes it, so a revision-checked
    write fails after anyone else's."""
    return os.urandom(12).hex()


class SqliteRecordStore(RecordStore):
    scheme = "sqlite"

    def __init__(self, path: Path, timeout_s: float = 30.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._local = threading.local()

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, str]) -> SqliteRecordStore:
        parts = urlsplit(url)
        raw = unquote(parts.netloc + parts.path)
        if not raw:
            raise ConfigError("sqlite URL needs a path, e.g. sqlite:///var/lib/owdedup.sqlite")
        try:
            timeout_s = float(options.get("timeout", 30.0))
        except ValueError:
            raise ConfigError(f"bad sqlite timeout {options.get('timeout')!r}") from None
        return cls(Path(raw), timeout_s=timeout_s)

    def describe(self) -> str:
        return f"sqlite://{self.path}"

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                conn = self._open()
                break
            except sqlite3.OperationalError as exc:
                # Switching a new file to WAL takes an exclusive lock for which SQLite does
                # not wait (no busy handler): several connections opening a fresh store at
                # once get "database is locked" and simply try again.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StoreError(
                        f"cannot open record store {self.describe()}: {exc}") from exc
                time.sleep(random.uniform(0.005, 0.05))
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open record store {self.describe()}: {exc}") from exc
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash; only an OS crash can lose
            # the last commits, and a lost record only means one recomputation.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            _add_missing_counters(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def get(self, function_id: str, input_digest: str) -> Record | None:
        try:
            row = self._conn().execute(
                "SELECT doc FROM records WHERE function_id = ? AND input_digest = ?",
                (function_id, input_digest),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"record lookup failed in {self.describe()}: {exc}") from exc
        return None if row is None else Record.from_dict(json.loads(row[0]))

    def get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Record]:
        wanted = set(keys)
        if not wanted:
            return {}
        # One statement per input digest, ``function_id IN (...) AND input_digest = ?``: a
        # primary-key probe per pair (SEARCH records USING PRIMARY KEY). A row-value list,
        # ``(function_id, input_digest) IN (VALUES ...)``, reads as one but SQLite (3.40)
        # plans it as a SCAN of the whole table. The keys of one lookup (the sizes of one
        # input) share their digest, so this is one statement per lookup.
        by_digest: dict[str, list[str]] = {}
        for function_id, digest in sorted(wanted):
            by_digest.setdefault(digest, []).append(function_id)
        found: dict[tuple[str, str], Record] = {}
        try:
            conn = self._conn()
            for digest, function_ids in by_digest.items():
                for doc in self._docs_of_digest(conn, digest, function_ids):
                    record = Record.from_dict(json.loads(doc))
                    pair = (record.function_id, record.input_digest)
                    if pair in wanted:
                        found[pair] = record
        except sqlite3.Error as exc:
            raise StoreError(f"record lookup failed in {self.describe()}: {exc}") from exc
        return found

    @staticmethod
    def _docs_of_digest(
        conn: sqlite3.Connection, digest: str, function_ids: list[str]
    ) -> list[str]:
        docs: list[str] = []
        for start in range(0, len(function_ids), _IDS_PER_STATEMENT):
            chunk = function_ids[start:start + _IDS_PER_STATEMENT]
            rows = conn.execute(
                f"SELECT doc FROM records WHERE function_id IN ({','.join('?' * len(chunk))}) "
                "AND input_digest = ?",
                [*chunk, digest],
            ).fetchall()
            docs += [doc for (doc,) in rows]
        return docs

    def put(self, record: Record) -> tuple[Record, bool]:
        try:
            cursor = self._conn().execute(_INSERT, _row(record))
        except sqlite3.Error as exc:
            raise StoreError(f"record write failed in {self.describe()}: {exc}") from exc
        if cursor.rowcount == 1:
            return record, True
        existing = self.get(record.function_id, record.input_digest)
        if existing is None:  # deleted between our insert and read: try once more
            return self.put(record)
        return existing, False

    def put_many(self, records: Iterable[Record]) -> int:
        """One transaction, one prepared INSERT OR IGNORE run over every record."""
        conn = self._conn()
        try:
            before = conn.total_changes
            cache_size = conn.execute("PRAGMA cache_size").fetchone()[0]
            conn.execute(f"PRAGMA cache_size = -{_BULK_CACHE_KIB}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, (_row(record) for record in records))
            except BaseException:
                conn.execute("ROLLBACK")  # nothing of a failed load is left behind
                raise
            finally:
                conn.execute(f"PRAGMA cache_size = {int(cache_size)}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"bulk record write failed in {self.describe()}: {exc}") from exc
        return conn.total_changes - before

    def records_of_digest(self, input_digest: str) -> list[Record]:
        # The primary key starts with the identity, so ``WHERE input_digest = ?`` alone reads
        # the whole table (0.2 s at 300k records). An index on the digest would cost every
        # lookup 4 % and every write 10 % for the sake of ``explain``; instead, find the
        # distinct identities by seeking from one to the next in the primary key, and probe
        # each with the digest (1.7 ms at 300k records and 6 identities). Where there are
        # more than a thousand (a wrapped action keyed by a per-call parameter has one per
        # call), the seeks would cost more than the scan: then read the table.
        try:
            conn = self._conn()
            function_ids = [fid for (fid,) in conn.execute(
                _IDENTITIES, (_MAX_SEEKED_IDENTITIES + 1,))]
            if len(function_ids) <= _MAX_SEEKED_IDENTITIES:
                docs = self._docs_of_digest(conn, input_digest, function_ids)
            else:
                docs = [doc for (doc,) in conn.execute(
                    "SELECT doc FROM records WHERE input_digest = ?", (input_digest,))]
        except sqlite3.Error as exc:
            raise StoreError(f"record lookup failed in {self.describe()}: {exc}") from exc
        return [Record.from_dict(json.loads(doc)) for doc in docs]

    def delete(self, function_id: str, input_digest: str) -> None:
        try:
            self._conn().execute(
                "DELETE FROM records WHERE function_id = ? AND input_digest = ?",
                (function_id, input_digest),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"record delete failed in {self.describe()}: {exc}") from exc

    def add_counts(
        self, function: str, *, hits: int = 0, misses: int = 0, saved_ms: float = 0.0,
        saved_bytes: int = 0, coalesced: int = 0, refused: int = 0, took_over: int = 0,
    ) -> None:
        try:
            self._conn().execute(
                "INSERT INTO counters (function, hits, misses, saved_ms, saved_bytes, "
                "coalesced, refused, took_over) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(function) DO UPDATE SET "
                "hits = hits + excluded.hits, misses = misses + excluded.misses, "
                "saved_ms = saved_ms + excluded.saved_ms, "
                "saved_bytes = saved_bytes + excluded.saved_bytes, "
                "coalesced = coalesced + excluded.coalesced, "
                "refused = refused + excluded.refused, "
                "took_over = took_over + excluded.took_over",
                (function, hits, misses, saved_ms, saved_bytes, coalesced, refused, took_over),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"counter update failed in {self.describe()}: {exc}") from exc

    def stats(self) -> list[FunctionStats]:
        try:
            conn = self._conn()
            by_function: dict[str, FunctionStats] = {}
            for function, negative, count, out_bytes in conn.execute(
                "SELECT function, json_extract(doc, '$.failure') IS NOT NULL AS negative, "
                "COUNT(*), SUM(CAST(json_extract(doc, '$.output.bytes') AS INTEGER)) "
                "FROM records GROUP BY function, negative"
            ):
                entry = by_function.setdefault(function, FunctionStats(function))
                if negative:
                    entry.failures += count
                else:
                    entry.records += count
                entry.output_bytes += int(out_bytes or 0)
            for (function, hits, misses, saved_ms, saved_bytes, coalesced, refused,
                 took_over) in conn.execute(
                "SELECT function, hits, misses, saved_ms, saved_bytes, coalesced, refused, "
                "took_over FROM counters"
            ):
                entry = by_function.setdefault(function, FunctionStats(function))
                entry.hits, entry.misses = hits, misses
                entry.saved_ms, entry.saved_bytes = saved_ms, saved_bytes
                entry.coalesced, entry.refused, entry.took_over = coalesced, refused, took_over
        except sqlite3.Error as exc:
            raise StoreError(f"stats query failed in {self.describe()}: {exc}") from exc
        return sorted(by_function.values(), key=lambda s: s.function)

    # -- leases: each operation one IMMEDIATE transaction, so its read and its write see
    # the same row (the write lock is taken at BEGIN, before the read) ---------------------

    @contextmanager
    def _immediate(self, action: str) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{action} failed in {self.describe()}: {exc}") from exc

    @staticmethod
    def _read_lease(conn: sqlite3.Connection, function_id: str,
                    input_digest: str) -> Lease | None:
        row = conn.execute(
            f"SELECT {_LEASE_COLUMNS} FROM leases WHERE function_id = ? AND input_digest = ?",
            (function_id, input_digest),
        ).fetchone()
        return None if row is None else Lease(str(row[0]), str(row[1]), str(row[2]),
                                              float(row[3]), str(row[4]))

    @staticmethod
    def _insert_lease(conn: sqlite3.Connection, lease: Lease) -> bool:
        cursor = conn.execute(
            f"INSERT OR IGNORE INTO leases ({_LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (lease.function_id, lease.input_digest, lease.owner, lease.expires_at,
             lease.revision),
        )
        return cursor.rowcount == 1

    def get_lease(self, function_id: str, input_digest: str) -> Lease | None:
        try:
            return self._read_lease(self._conn(), function_id, input_digest)
        except sqlite3.Error as exc:
            raise StoreError(f"lease lookup failed in {self.describe()}: {exc}") from exc

    def claim(self, function_id: str, input_digest: str, owner: str,
              expires_at: float) -> tuple[Lease, bool]:
        lease = Lease(function_id, input_digest, owner, expires_at, _revision())
        with self._immediate("lease claim") as conn:
            if self._insert_lease(conn, lease):
                return lease, True
            held = self._read_lease(conn, function_id, input_digest)
        assert held is not None  # the insert was ignored for this row, under our lock
        return held, False

    def take_over(self, stale: Lease, owner: str, expires_at: float) -> tuple[Lease, bool]:
        lease = Lease(stale.function_id, stale.input_digest, owner, expires_at, _revision())
        with self._immediate("lease take-over") as conn:
            cursor = conn.execute(
                "UPDATE leases SET owner = ?, expires_at = ?, revision = ? "
                "WHERE function_id = ? AND input_digest = ? AND revision = ?",
                (owner, expires_at, lease.revision, stale.function_id, stale.input_digest,
                 stale.revision),
            )
            if cursor.rowcount == 1:
                return lease, True
            held = self._read_lease(conn, stale.function_id, stale.input_digest)
            if held is None:  # released meanwhile: an ordinary claim
                return lease, self._insert_lease(conn, lease)
        return held, False

    def renew(self, lease: Lease, expires_at: float) -> Lease | None:
        renewed = Lease(lease.function_id, lease.input_digest, lease.owner, expires_at,
                        _revision())
        with self._immediate("lease renewal") as conn:
            cursor = conn.execute(
                "UPDATE leases SET expires_at = ?, revision = ? "
                "WHERE function_id = ? AND input_digest = ? AND revision = ?",
                (expires_at, renewed.revision, lease.function_id, lease.input_digest,
                 lease.revision),
            )
        return renewed if cursor.rowcount == 1 else None

    def release(self, lease: Lease) -> None:
        with self._immediate("lease release") as conn:
            conn.execute(
                "DELETE FROM leases WHERE function_id = ? AND input_digest = ? AND revision = ?",
                (lease.function_id, lease.input_digest, lease.revision),
            )

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
