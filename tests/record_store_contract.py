"""The behaviour every record store must have, run against each backend.

A backend's test module subclasses :class:`RecordStoreContract` and provides a ``records``
fixture (a fresh, empty store); every backend then answers to the same tests.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.synchronize
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from owdedup.runtime.records import Lease, OutputRef, Record, RecordStore, open_records
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


def _race(count: int, target: Callable[..., None],
          args: Callable[[int, Any, Any], tuple[Any, ...]]) -> list[Any]:
    """*count* spawned processes run *target* (``args(i, barrier, results)``), which waits
    at the barrier and puts its outcome on the queue; every outcome, once all have exited
    cleanly."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count)
    results: multiprocessing.Queue[Any] = ctx.Queue()
    procs = [ctx.Process(target=target, args=args(i, barrier, results)) for i in range(count)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return outcomes


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
    outcomes: list[tuple[int, bool, str]] = _race(
        writers, _racer, lambda i, barrier, results: (url, dict(options), i, barrier, results))
    winners = [outcome for outcome in outcomes if outcome[1]]
    assert len(winners) == 1
    assert {key for _, _, key in outcomes} == {winners[0][2]}  # everyone sees the winner's
    return winners[0][2]


FID, DIGEST = "f" * 64, "d" * 64
#: Far enough ahead that no test sees it expire; far enough behind that every test sees it has.
LATER, EARLIER = time.time() + 3600, time.time() - 3600


def _lease_racer(url: str, options: dict[str, str], index: int, stale: Lease | None,
                 barrier: multiprocessing.synchronize.Barrier,
                 results: multiprocessing.Queue[tuple[str, bool]]) -> None:
    store = open_records(url, options)
    store.get_lease(FID, "0" * 64)  # connect (and import the client) before the start line
    owner = f"activation-{index}"
    barrier.wait()
    if stale is None:
        lease, mine = store.claim(FID, DIGEST, owner, LATER)
    else:
        lease, mine = store.take_over(stale, owner, LATER)
    results.put((owner if mine else "", lease.owner == owner))


def race_for_lease(url: str, options: Mapping[str, str], stale: Lease | None,
                   claimants: int = 8) -> str:
    """*claimants* processes claim the key (*stale* None) or take over *stale* at the same
    moment. Asserts exactly one won and that it holds the stored lease; returns its owner."""
    outcomes: list[tuple[str, bool]] = _race(
        claimants, _lease_racer,
        lambda i, barrier, results: (url, dict(options), i, stale, barrier, results))
    winners = [owner for owner, _ in outcomes if owner]
    assert len(winners) == 1
    assert sum(holds for _, holds in outcomes) == 1  # the losers were told the winner's lease
    stored = open_records(url, dict(options)).get_lease(FID, DIGEST)
    assert stored is not None and stored.owner == winners[0]
    return winners[0]


def in_threads(count: int, work: Callable[[int], tuple[Lease, bool]]) -> list[tuple[Lease, bool]]:
    """*work*(i) for i in range(count), started together in threads; their results."""
    barrier = threading.Barrier(count)
    outcomes: list[tuple[Lease, bool]] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        barrier.wait()
        outcome = work(index)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == count
    return outcomes


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

    def test_in_flight_and_refusal_counters(self, records: RecordStore) -> None:
        records.add_counts("thumbnail", coalesced=7, saved_ms=70.0)
        records.add_counts("thumbnail", refused=2, took_over=1)
        records.add_counts("thumbnail", hits=1, coalesced=1)
        (stats,) = records.stats()
        assert (stats.coalesced, stats.refused, stats.took_over, stats.hits) == (8, 2, 1, 1)
        assert stats.saved_ms == 70.0

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

    # -- leases ---------------------------------------------------------------------------

    def test_a_claim_is_exclusive_and_leaves_the_records_alone(
        self, records: RecordStore
    ) -> None:
        assert records.get_lease(FID, DIGEST) is None
        lease, mine = records.claim(FID, DIGEST, "owner-a", LATER)
        assert mine and (lease.owner, lease.expires_at) == ("owner-a", LATER)
        assert records.get_lease(FID, DIGEST) == lease
        held, mine = records.claim(FID, DIGEST, "owner-b", LATER + 5)
        assert not mine and held == lease  # the winner's lease, unchanged
        # a lease is no record: lookups, stats and the record's own write never see it
        assert records.get(FID, DIGEST) is None and records.get_many([(FID, DIGEST)]) == {}
        assert records.stats() == []
        stored, created = records.put(make_record(FID, DIGEST))
        assert created and stored.output.key == "out/1.jpg"
        assert records.get_lease(FID, "e" * 64) is None

    def test_renew_extends_only_the_current_lease(self, records: RecordStore) -> None:
        lease, _ = records.claim(FID, DIGEST, "owner-a", LATER)
        renewed = records.renew(lease, LATER + 60)
        assert renewed is not None and renewed.expires_at == LATER + 60
        assert renewed.owner == "owner-a" and renewed.revision != lease.revision
        assert records.get_lease(FID, DIGEST) == renewed
        assert records.renew(lease, LATER + 120) is None  # an old revision: not the lease
        assert records.get_lease(FID, DIGEST) == renewed

    def test_release_lets_the_next_claimant_win(self, records: RecordStore) -> None:
        lease, _ = records.claim(FID, DIGEST, "owner-a", LATER)
        records.release(lease)
        assert records.get_lease(FID, DIGEST) is None
        records.release(lease)  # already gone: fine
        taken, mine = records.claim(FID, DIGEST, "owner-b", LATER)
        assert mine and taken.owner == "owner-b"
        assert records.renew(lease, LATER) is None

    def test_an_expired_lease_is_taken_over_once_and_never_by_a_claim(
        self, records: RecordStore
    ) -> None:
        stale, _ = records.claim(FID, DIGEST, "killed", EARLIER)
        assert stale.expired(time.time())
        held, mine = records.claim(FID, DIGEST, "waiter-0", LATER)
        assert not mine and held == stale  # claim never replaces a lease, expired or not
        taken, mine = records.take_over(stale, "waiter-1", LATER)
        assert mine and taken.owner == "waiter-1" and not taken.expired(time.time())
        again, mine = records.take_over(stale, "waiter-2", LATER)
        assert not mine and again == taken  # the stale revision is gone
        # the killed owner, back, can neither renew nor release the lease it lost
        assert records.renew(stale, LATER) is None
        records.release(stale)
        assert records.get_lease(FID, DIGEST) == taken

    def test_taking_over_a_released_lease_is_a_claim(self, records: RecordStore) -> None:
        stale, _ = records.claim(FID, DIGEST, "killed", EARLIER)
        records.release(stale)
        taken, mine = records.take_over(stale, "waiter", LATER)
        assert mine and records.get_lease(FID, DIGEST) == taken

    def test_a_renewed_lease_cannot_be_taken_over_by_its_old_revision(
        self, records: RecordStore
    ) -> None:
        stale, _ = records.claim(FID, DIGEST, "slow", EARLIER)
        renewed = records.renew(stale, LATER)  # the owner renewed just before the waiter
        assert renewed is not None
        held, mine = records.take_over(stale, "waiter", LATER)
        assert not mine and held == renewed

    def test_claim_or_take_over(self, records: RecordStore) -> None:
        now = time.time()
        live, mine = records.claim_or_take_over(FID, DIGEST, "a", LATER, now)
        assert mine
        assert records.claim_or_take_over(FID, DIGEST, "b", LATER, now) == (live, False)
        assert records.claim_or_take_over(FID, DIGEST, "c", LATER, LATER + 1)[1]

    def test_concurrent_claimants_in_threads_one_wins_and_one_takes_over(
        self, records: RecordStore
    ) -> None:
        claims = in_threads(8, lambda i: records.claim(FID, DIGEST, f"t{i}", EARLIER))
        winners = [lease for lease, mine in claims if mine]
        assert len(winners) == 1
        assert {lease.owner for lease, _ in claims} == {winners[0].owner}
        stale = winners[0]  # it expired at once (EARLIER): every waiter takes over
        takeovers = in_threads(8, lambda i: records.take_over(stale, f"w{i}", LATER))
        new_owners = [lease.owner for lease, mine in takeovers if mine]
        assert len(new_owners) == 1
        assert {lease.owner for lease, _ in takeovers} == set(new_owners)
        current = records.get_lease(FID, DIGEST)
        assert current is not None and current.owner == new_owners[0]

    def test_records_of_a_digest_under_every_identity(self, records: RecordStore) -> None:
        parts = {"schema": 1, "function": "thumbnail", "code": "c" * 64,
                 "libraries": {"pillow": "12.0"}, "params": {"quality": 85}}
        first = dataclasses.replace(make_record("a" * 64, DIGEST), identity=parts)
        records.put(first)
        records.put(make_record("b" * 64, DIGEST))
        records.put(make_record("a" * 64, "e" * 64))
        found = sorted(records.records_of_digest(DIGEST), key=lambda r: r.function_id)
        assert [r.function_id for r in found] == ["a" * 64, "b" * 64]
        assert found[0] == first and found[0].identity == parts
        assert found[1].identity is None
        assert records.records_of_digest("0" * 64) == []

    # -- negative records -------------------------------------------------------------------

    def test_a_negative_record_round_trips_and_is_counted_apart(
        self, records: RecordStore
    ) -> None:
        negative = Record.for_failure(
            function="thumbnail", function_id=FID, input_digest=DIGEST,
            message="corrupt or truncated image: broken data stream", judged={"max_pixels": 10},
            input_bytes=5, created="2026-01-01T00:00:00+00:00")
        stored, created = records.put(negative)
        assert created and stored == negative
        found = records.get(FID, DIGEST)
        assert found == negative and found is not None
        assert found.failure_mismatch(FID, DIGEST, {"max_pixels": 10}) is None
        assert found.failure_mismatch(FID, DIGEST, {"max_pixels": 20}) is not None  # re-judge
        assert found.failure_mismatch(FID, "e" * 64, {"max_pixels": 10}) is not None
        # never taken for an output or a result
        assert found.mismatch(FID, DIGEST, "") is not None
        assert found.result_mismatch(FID, DIGEST) is not None
        records.put(make_record(digest="e" * 64, size=10))
        (stats,) = records.stats()
        assert (stats.records, stats.failures, stats.output_bytes) == (1, 1, 10)
        # an output record is no negative one
        output = records.get(FID, "e" * 64)
        assert output is not None and output.failure is None
        assert output.failure_mismatch(FID, "e" * 64, {}) is not None
