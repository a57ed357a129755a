from __future__ import annotations

import atexit
from pathlib import Path

import pytest

from owdedup.runtime.counters import CountBuffer
from owdedup.runtime.errors import StoreError
from owdedup.runtime.records import RecordStore, open_records


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def totals(store: RecordStore) -> tuple[int, int]:
    stats = store.stats()
    return (stats[0].hits, stats[0].misses) if stats else (0, 0)


def test_counts_are_written_in_batches(tmp_path: Path) -> None:
    store = open_records(f"sqlite://{tmp_path / 'r.sqlite'}")
    clock = Clock()
    buffer = CountBuffer(lambda: store, max_pending=3, max_age_s=60, clock=clock)
    buffer.add("thumbnail", hits=1, saved_ms=5.0)
    buffer.add("thumbnail", misses=1)
    assert totals(store) == (0, 0)  # nothing written yet: the hit path did not pay a write
    buffer.add("thumbnail", hits=1, saved_ms=5.0)
    assert totals(store) == (2, 1)
    buffer.add("thumbnail", hits=1)
    clock.now = 61
    buffer.add("thumbnail", hits=1)  # old enough: flushed on age
    assert totals(store) == (4, 1)
    assert store.stats()[0].saved_ms == 10.0


def test_failed_flush_keeps_the_counts(tmp_path: Path) -> None:
    store = open_records(f"sqlite://{tmp_path / 'r.sqlite'}")
    broken = True

    def records() -> RecordStore:
        if broken:
            raise StoreError("record store down")
        return store

    buffer = CountBuffer(records, max_pending=1)
    buffer.add("thumbnail", hits=2)  # flush fails: kept, no exception
    broken = False
    buffer.flush()
    assert totals(store) == (2, 0)
    buffer.flush()  # nothing pending: nothing written twice
    assert totals(store) == (2, 0)
    buffer.close()


def test_failed_flush_waits_for_the_next_batch(tmp_path: Path) -> None:
    store = open_records(f"sqlite://{tmp_path / 'r.sqlite'}")
    clock = Clock()
    attempts = 0

    def records() -> RecordStore:
        nonlocal attempts
        attempts += 1
        raise StoreError("record store down")

    buffer = CountBuffer(records, max_pending=3, max_age_s=60, clock=clock)
    for _ in range(3):
        buffer.add("thumbnail", hits=1)
    assert attempts == 1  # the batch is full: one try, which fails
    buffer.add("thumbnail", hits=1)
    buffer.add("thumbnail", hits=1)
    assert attempts == 1  # no retry on every later lookup
    buffer.add("thumbnail", hits=1)
    assert attempts == 2  # the next batch is full: one retry
    clock.now = 61
    buffer.add("thumbnail", hits=1)
    assert attempts == 3  # old enough: one retry on age
    assert totals(store) == (0, 0)
    buffer.close()  # one last try, and no exit hook left behind
    assert attempts == 4


def test_close_removes_the_exit_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hooks: list[object] = []
    monkeypatch.setattr(atexit, "register", hooks.append)
    monkeypatch.setattr(atexit, "unregister", hooks.remove)
    store = open_records(f"sqlite://{tmp_path / 'r.sqlite'}")
    buffer = CountBuffer(lambda: store)
    buffer.add("thumbnail", hits=1)
    assert len(hooks) == 1
    buffer.close()
    assert hooks == [] and totals(store) == (1, 0)
