from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.config import Settings
from owdedup.runtime.errors import ConfigError
from owdedup.runtime.records import OutputRef, Record, open_records
from owdedup.runtime.records.sqlite import SqliteRecordStore
from tests.forged_records import (
    check_a_forged_record_into_another_bucket_is_not_trusted,
    check_a_forged_record_is_not_trusted,
)
from tests.record_store_contract import (
    DIGEST,
    FID,
    RecordStoreContract,
    make_record,
    race_for_lease,
    race_to_put,
)


class TestSqliteContract(RecordStoreContract):
    pass


@pytest.fixture
def records(tmp_path: Path) -> SqliteRecordStore:
    store = open_records(f"sqlite://{tmp_path / 'r.sqlite'}")
    assert isinstance(store, SqliteRecordStore)
    return store


def test_counting_hits_never_rewrites_records(records: SqliteRecordStore, tmp_path: Path) -> None:
    records.put(make_record())
    import sqlite3

    conn = sqlite3.connect(tmp_path / "r.sqlite")
    before = conn.execute("SELECT doc FROM records").fetchall()
    for _ in range(5):
        records.add_counts("thumbnail", hits=1, saved_ms=10.0, saved_bytes=100)
    records.add_counts("thumbnail", misses=2)
    after = conn.execute("SELECT doc FROM records").fetchall()
    assert before == after
    (stats,) = records.stats()
    assert (stats.function, stats.records, stats.hits, stats.misses) == ("thumbnail", 1, 5, 2)
    assert stats.saved_ms == pytest.approx(50.0)
    assert stats.saved_bytes == 500
    assert stats.output_bytes == 123


def test_concurrent_writers_in_processes_store_one_record(tmp_path: Path) -> None:
    path = tmp_path / "race.sqlite"
    SqliteRecordStore(path).stats()  # create the schema first
    winner = race_to_put(f"sqlite://{path}", {})
    stored = SqliteRecordStore(path).get("f" * 64, "d" * 64)
    assert stored is not None and stored.output.key == winner


def test_unknown_scheme_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"choose one of: .*sqlite"):
        open_records("nosuch://host/db")
    with pytest.raises(ConfigError, match="needs a scheme"):
        open_records("/just/a/path")


def test_credentials_in_urls_are_redacted_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        open_records("nosuch://admin:hunter2@host/db")
    assert "hunter2" not in str(info.value)


def _query_plans(records: SqliteRecordStore, lookup: Callable[[], object]) -> list[str]:
    """The plan (EXPLAIN QUERY PLAN) of every SELECT that *lookup* runs on this store."""
    conn = records._conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)  # each statement with its values bound
    try:
        lookup()
    finally:
        conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert selects, statements
    return [row[3] for sql in selects for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]


@pytest.mark.parametrize("digests", [1, 3], ids=["one-digest", "three-digests"])
def test_get_many_probes_the_primary_key_and_never_scans(
    records: SqliteRecordStore, digests: int
) -> None:
    """Six sizes of one input (and of several) are looked up by primary key: a row-value
    ``IN (VALUES ...)`` was planned as ``SCAN records``, 264 ms at 1M records."""
    fids = [f"{size:064x}" for size in (16, 32, 64, 128, 256, 512)]
    keys = [(fid, f"{d:064x}") for d in range(digests) for fid in fids]
    for fid, digest in keys[::2]:
        records.put(make_record(fid, digest))
    found: dict[tuple[str, str], object] = {}

    def lookup() -> None:
        found.update(records.get_many(keys))

    plans = _query_plans(records, lookup)
    assert set(found) == set(keys[::2])
    assert not [p for p in plans if p.startswith("SCAN")], plans
    assert all(p.startswith("SEARCH records USING PRIMARY KEY") for p in plans), plans


def test_the_records_of_one_digest_are_found_without_a_scan(
    records: SqliteRecordStore,
) -> None:
    """``explain`` asks for every record of one input, under any identity: ``WHERE
    input_digest = ?`` was a SCAN of the whole table (the primary key starts with the
    identity); it seeks from one identity to the next instead."""
    digest = "d" * 64
    for size in (16, 256):
        records.put(make_record(f"{size:064x}", digest))
    for other in ("e", "f"):
        records.put(make_record(f"{64:064x}", other * 64))
    found: list[Record] = []
    plans = _query_plans(records, lambda: found.extend(records.records_of_digest(digest)))
    assert sorted(r.function_id for r in found) == [f"{16:064x}", f"{256:064x}"]
    assert not [p for p in plans if p.startswith("SCAN records")], plans
    assert records.records_of_digest("0" * 64) == []
    assert SqliteRecordStore(records.path.parent / "empty.sqlite").records_of_digest(digest) == []


def test_records_of_a_digest_among_thousands_of_identities_cost_about_a_scan(
    records: SqliteRecordStore,
) -> None:
    """A wrapped action keyed by a per-call parameter has one identity per record: seeking
    from each identity to the next then costs far more than reading the table once (13x its
    virtual-machine steps here, before the walk was capped)."""
    records.put_many(make_record(f"{i:064x}", f"{i % 7:064x}") for i in range(5000))
    digest = f"{3:064x}"
    conn = records._conn()
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        found = records.records_of_digest(digest)
        walked, steps[0] = steps[0], 0
        scanned = conn.execute("SELECT doc FROM records WHERE input_digest = ?",
                               (digest,)).fetchall()
    finally:
        conn.set_progress_handler(None, 0)
    assert len(found) == len(scanned) == len(range(3, 5000, 7))
    assert {r.input_digest for r in found} == {digest}
    assert walked <= 5 * steps[0], (walked, steps[0])


def test_put_many_is_one_transaction_and_a_failure_leaves_nothing(
    records: SqliteRecordStore,
) -> None:
    def records_then_a_failure() -> Iterator[Record]:
        yield make_record(digest="1" * 64)
        yield make_record(digest="2" * 64)
        raise ValueError("the source of the migration broke")

    with pytest.raises(ValueError, match="migration broke"):
        records.put_many(records_then_a_failure())
    assert records.get_many([("f" * 64, "1" * 64), ("f" * 64, "2" * 64)]) == {}
    assert records.put_many([make_record(digest=f"{i:064x}") for i in range(1000)]) == 1000
    assert records.stats()[0].records == 1000


def test_record_documents_hold_every_field() -> None:
    record = make_record()
    doc = record.to_dict()
    assert set(doc) == {f.name for f in fields(Record)}
    assert set(doc["output"]) == {f.name for f in fields(OutputRef)}
    assert Record.from_dict(doc) == record
    doc["params"]["size"] = 1  # a copy: the record is not changed through it
    assert record.params == {"size": 64}


# -- forged records (issue 8, item 2) ------------------------------------------------------

def test_a_forged_record_in_sqlite_is_not_trusted(settings: Settings, store_root: Path) -> None:
    check_a_forged_record_is_not_trusted(settings, store_root)


def test_a_forged_record_pointing_into_another_bucket_is_not_trusted(
        settings: Settings, store_root: Path) -> None:
    check_a_forged_record_into_another_bucket_is_not_trusted(settings, store_root)


def test_a_record_is_believed_only_for_its_own_key_and_derived_output_name() -> None:
    record = make_record("f" * 64, "d" * 64, key="thumbnail/64/fff/ddd.jpg")
    assert record.mismatch("f" * 64, "d" * 64, "thumbnail/64/fff/ddd.jpg") is None
    assert "function identity" in str(record.mismatch("e" * 64, "d" * 64,
                                                       "thumbnail/64/fff/ddd.jpg"))
    assert "input digest" in str(record.mismatch("f" * 64, "c" * 64, "thumbnail/64/fff/ddd.jpg"))
    assert "not the name derived" in str(record.mismatch("f" * 64, "d" * 64,
                                                          "thumbnail/64/fff/other.jpg"))



def test_concurrent_claimants_in_processes_one_wins_then_one_takes_over(
    tmp_path: Path,
) -> None:
    path = tmp_path / "leases.sqlite"
    store = SqliteRecordStore(path)
    store.stats()  # create the schema first
    winner = race_for_lease(f"sqlite://{path}", {}, None)
    held = store.get_lease(FID, DIGEST)
    assert held is not None and held.owner == winner
    # the winner "was killed": its lease expires, and of 8 waiters exactly one takes it over
    expired = store.renew(held, time.time() - 1)
    assert expired is not None
    race_for_lease(f"sqlite://{path}", {}, expired)


def test_a_store_made_before_the_in_flight_counters_gets_them(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE counters (function TEXT PRIMARY KEY, hits INTEGER NOT NULL DEFAULT 0, "
        "misses INTEGER NOT NULL DEFAULT 0, saved_ms REAL NOT NULL DEFAULT 0, "
        "saved_bytes INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO counters (function, hits) VALUES ('thumbnail', 5);")
    old.close()
    store = SqliteRecordStore(path)
    store.add_counts("thumbnail", coalesced=2, took_over=1)
    (stats,) = store.stats()
    assert (stats.hits, stats.coalesced, stats.took_over, stats.refused) == (5, 2, 1, 0)


def test_many_connections_opening_a_fresh_store_at_once_all_open(tmp_path: Path) -> None:
    """Switching a new file to WAL takes a lock SQLite does not wait for: threads that open a
    fresh store together got "database is locked" (a claim race in CI lost a thread to it)."""
    import threading

    from owdedup.runtime.records import open_records

    failures: list[BaseException] = []
    for attempt in range(10):
        store = open_records(f"sqlite://{tmp_path / f'fresh-{attempt}.sqlite'}", {})
        barrier = threading.Barrier(12)

        def open_and_read(store: Any = store, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                store.get("0" * 64, "1" * 64)
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                failures.append(exc)

        threads = [threading.Thread(target=open_and_read) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        store.close()
    assert failures == []
