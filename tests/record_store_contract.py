"""The behaviour every record store must have, run against each backend.

A backend's test module subclasses :class:`RecordStoreContract` and provides a ``records``
fixture (a fresh, empty store); every backend then answers to the same tests.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from collections.abc import Mapping
from typing import Any

from owdedup.runtime.records import OutputRef, Record, RecordStore, open_records
from owdedup.runtime.records.base import RESULT_LIMIT_BYTES


def make_record(fid: str = "f" * 64, digest: str = "d" * 64, key: str = "out/1.jpg",
                function: str = "thumbnail", size: int = 123) -> Record:
    return Record(
        function=function, function_id=fid, input_digest=digest,
        output=OutputRef("thumbs", key, size, 64, 48), params={"size": 64},
        compute_ms=12.5, input_bytes=4096, created="2026-01-01T00:00:00+00:00",
    )


def make_result_record(fid: str = "a" * 64, digest: str = "d" * 64,
                       result: dict[str, Any] | None = None) -> Record:
    return Record.for_result(
        function="myfunction", function_id=fid, input_digest=digest,
        result={"labels": ["cat", "dog"], "score": 0.5, "nested": {"bucket": "b", "key": "k"}}
        if result is None else result,
        params={"threshold": 3}, compute_ms=42.0, input_bytes=10,
        created="2026-01-01T00:00:00+00:00", activation="0123456789abcdef0123456789abcdef",
    )


def _racer(url: str, options: dict[str, str], index: int,
           barrier: multiprocessing.synchronize.Barrier,
           results: multiprocessing.Queue[tuple[int, bool, str]]) -> None:
    store = open_records(url, options)
    store.get("f" * 64, "0" * 64)  # connect (and import the client) before the start line
    barrier.wait()
    stored, created = store.put(make_record(key=f"out/{index}.jpg"))
    results.put((index, created, stored.output.key))


def race_to_put(url: str, options: Mapping[str, str], writers: int = 8) -> str:
    """``writers`` processes put the same record (each naming its own output) at the same
    moment through stores opened on ``url``. Asserts exactly one created it and every other
    got that winner's record back; returns the winner's output key."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers)
    results: multiprocessing.Queue[tuple[int, bool, str]] = ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(url, dict(options), i, barrier, results))
             for i in range(writers)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    winners = [outcome for outcome in outcomes if outcome[1]]
    assert len(winners) == 1
    assert {key for _, _, key in outcomes} == {winners[0][2]}  # everyone sees the winner's
    return winners[0][2]


class RecordStoreContract:
    def test_put_then_get_round_trips(self, records: RecordStore) -> None:
        record = make_record()
        stored, created = records.put(record)
        assert created and stored == record
        assert records.get(record.function_id, record.input_digest) == record
        assert records.get(record.function_id, "e" * 64) is None

    def test_second_writer_gets_the_first_record(self, records: RecordStore) -> None:
        records.put(make_record(key="out/first.jpg"))
        stored, created = records.put(make_record(key="out/second.jpg"))
        assert not created
        assert stored.output.key == "out/first.jpg"

    def test_get_many_returns_only_matching_pairs(self, records: RecordStore) -> None:
        records.put(make_record("a" * 64, "1" * 64))
        records.put(make_record("b" * 64, "1" * 64))
        records.put(make_record("a" * 64, "2" * 64))
        records.put(make_record("c" * 64, "3" * 64))
        records.delete("c" * 64, "3" * 64)
        found = records.get_many([
            ("a" * 64, "1" * 64), ("b" * 64, "2" * 64), ("a" * 64, "2" * 64),
            ("c" * 64, "3" * 64), ("a" * 64, "1" * 64),
        ])
        assert set(found) == {("a" * 64, "1" * 64), ("a" * 64, "2" * 64)}
        assert found[("a" * 64, "2" * 64)].input_digest == "2" * 64
        assert set(records.get_many([("b" * 64, "1" * 64)])) == {("b" * 64, "1" * 64)}
        assert records.get_many([]) == {}

    def test_delete_then_write_again(self, records: RecordStore) -> None:
        record = make_record()
        records.put(record)
        records.delete(record.function_id, record.input_digest)
        assert records.get(record.function_id, record.input_digest) is None
        records.delete(record.function_id, record.input_digest)  # already gone: fine
        stored, created = records.put(make_record(key="out/again.jpg"))
        assert created and stored.output.key == "out/again.jpg"

    def test_counters_and_stats(self, records: RecordStore) -> None:
        records.put(make_record(size=100))
        records.put(make_record(digest="e" * 64, size=50))
        records.put(make_record(digest="e" * 64, function="other", fid="0" * 64, size=7))
        records.add_counts("thumbnail", hits=2, saved_ms=10.0, saved_bytes=300)
        records.add_counts("thumbnail", misses=1)
        records.add_counts("unseen", hits=1)
        stats = {s.function: s for s in records.stats()}
        assert set(stats) == {"thumbnail", "other", "unseen"}
        thumb = stats["thumbnail"]
        assert (thumb.records, thumb.hits, thumb.misses) == (2, 2, 1)
        assert thumb.saved_ms == 10.0 and thumb.saved_bytes == 300
        assert thumb.output_bytes == 150
        assert (stats["unseen"].records, stats["unseen"].hits) == (0, 1)

    def test_put_many_inserts_the_absent_and_keeps_what_exists(
        self, records: RecordStore
    ) -> None:
        assert records.put_many([]) == 0
        records.put(make_record("a" * 64, "1" * 64, key="out/kept.jpg"))
        made = [make_record("a" * 64, f"{i}" * 64, key=f"out/new-{i}.jpg") for i in range(1, 5)]
        made.append(make_record("b" * 64, "1" * 64, function="other", size=7))
        assert records.put_many(iter(made)) == 4  # any iterable; the existing one skipped
        found = records.get_many([(r.function_id, r.input_digest) for r in made])
        assert {pair: r.output.key for pair, r in found.items()} == {
            ("a" * 64, "1" * 64): "out/kept.jpg",
            **{("a" * 64, f"{i}" * 64): f"out/new-{i}.jpg" for i in range(2, 5)},
            ("b" * 64, "1" * 64): "out/1.jpg",
        }
        assert found[("a" * 64, "2" * 64)] == made[1]  # stored whole, as put stores it
        assert records.put_many(made) == 0  # a second load creates nothing
        stats = {s.function: s.records for s in records.stats()}
        assert stats == {"thumbnail": 4, "other": 1}

    def test_put_many_then_put_meet_on_one_record(self, records: RecordStore) -> None:
        assert records.put_many([make_record(key="out/bulk.jpg")]) == 1
        stored, created = records.put(make_record(key="out/single.jpg"))
        assert not created and stored.output.key == "out/bulk.jpg"

    def test_a_result_record_round_trips_whole(self, records: RecordStore) -> None:
        record = make_result_record()
        stored, created = records.put(record)
        assert created and stored == record
        found = records.get(record.function_id, record.input_digest)
        assert found == record
        assert found is not None and found.result == record.result
        assert found.activation == record.activation and found.compute_ms == 42.0
        assert found.result_mismatch(record.function_id, record.input_digest) is None
        # a result record is never an object's record, nor the reverse
        assert found.mismatch(record.function_id, record.input_digest, "out/1.jpg") is not None
        thumb = make_record()
        records.put(thumb)
        got = records.get(thumb.function_id, thumb.input_digest)
        assert got is not None and got.result is None and got.activation == ""
        assert got.result_mismatch(thumb.function_id, thumb.input_digest) is not None

    def test_a_result_near_the_limit_is_stored_and_counted(self, records: RecordStore) -> None:
        big = make_result_record(result={"blob": "x" * (RESULT_LIMIT_BYTES - 20)})
        records.put(big)
        found = records.get(big.function_id, big.input_digest)
        assert found is not None and found.result == big.result
        stats = {s.function: s for s in records.stats()}
        assert stats["myfunction"].records == 1
        assert stats["myfunction"].output_bytes == big.output.bytes > RESULT_LIMIT_BYTES - 30
