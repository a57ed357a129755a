from __future__ import annotations

from pathlib import Path

import pytest

from owdedup.runtime.config import Settings
from owdedup.runtime.errors import ConfigError
from owdedup.runtime.records import open_records
from owdedup.runtime.records.sqlite import SqliteRecordStore
from tests.forged_records import (
    check_a_forged_record_into_another_bucket_is_not_trusted,
    check_a_forged_record_is_not_trusted,
)
from tests.record_store_contract import RecordStoreContract, make_record, race_to_put


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

