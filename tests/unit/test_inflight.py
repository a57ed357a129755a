"""The lease protocol (runtime/inflight.py) over a real SQLite record store, on a fake clock:
claim, wait and be answered, take over an expired or unbelievable lease, give up at the
waiter's own deadline, renew while computing, let go after a failure."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from owdedup.runtime import inflight
from owdedup.runtime.errors import StoreError
from owdedup.runtime.inflight import Claimant
from owdedup.runtime.records.sqlite import SqliteRecordStore

FID, DIGEST = "f" * 64, "d" * 64


class FakeTime:
    """A clock that moves only when slept on; *on_sleep* runs after each sleep."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda polls: None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept.append(seconds)
        self.on_sleep(len(self.slept))


@pytest.fixture
def records(tmp_path: Path) -> SqliteRecordStore:
    return SqliteRecordStore(tmp_path / "r.sqlite")


def claimant(records: SqliteRecordStore, fake: FakeTime, owner: str = "waiter",
             deadline: float | None = None) -> Claimant:
    return Claimant(records, owner, deadline, clock=fake.clock, sleep=fake.sleep)


def never() -> bool:
    """Nothing recorded yet."""
    return False


def test_a_free_key_is_claimed_at_once(records: SqliteRecordStore) -> None:
    fake = FakeTime()
    turn = claimant(records, fake, deadline=fake.now + 10).take_turn(FID, DIGEST, never)
    assert turn.lease is not None and not turn.answered and fake.slept == []
    assert turn.lease.owner == "waiter"
    assert turn.lease.expires_at == fake.now + 10  # never past the holder's own deadline
    assert records.get_lease(FID, DIGEST) == turn.lease


def test_a_waiter_is_answered_when_the_holder_finishes(records: SqliteRecordStore) -> None:
    fake = FakeTime()
    held, _ = records.claim(FID, DIGEST, "holder", fake.now + inflight.LEASE_S)
    recorded = threading.Event()

    def holder_finishes(polls: int) -> None:
        if polls == 4:  # the holder records, then lets go
            recorded.set()
            records.release(held)

    fake.on_sleep = holder_finishes
    turn = claimant(records, fake).take_turn(FID, DIGEST, recorded.is_set)
    assert turn.answered and turn.lease is None and turn.polls == 4
    assert turn.waited_s == pytest.approx(sum(fake.slept))
    # bounded back-off: growing pauses, none above the ceiling
    assert max(fake.slept) <= inflight.MAX_POLL_S
    assert records.get_lease(FID, DIGEST) is None


def test_a_waiter_computes_when_the_holder_fails(records: SqliteRecordStore) -> None:
    fake = FakeTime()
    held, _ = records.claim(FID, DIGEST, "holder", fake.now + inflight.LEASE_S)
    fake.on_sleep = lambda polls: records.release(held) if polls == 2 else None
    turn = claimant(records, fake).take_turn(FID, DIGEST, lambda: False)  # nothing recorded
    assert turn.lease is not None and turn.lease.owner == "waiter"
    assert not turn.answered and not turn.took_over


def test_an_expired_lease_is_taken_over(records: SqliteRecordStore) -> None:
    fake = FakeTime()
    records.claim(FID, DIGEST, "killed", fake.now + 3)  # its holder never renews it
    turn = claimant(records, fake).take_turn(FID, DIGEST, lambda: False)
    assert turn.took_over and turn.lease is not None and turn.lease.owner == "waiter"
    assert fake.now >= 1_000_003  # waited for the expiry, no longer than a poll after it
    assert fake.now < 1_000_003 + inflight.MAX_POLL_S
    assert records.get_lease(FID, DIGEST) == turn.lease


def test_a_claim_won_after_the_holder_recorded_and_let_go_is_answered(
    records: SqliteRecordStore,
) -> None:
    """Looked up (a miss), then the holder recorded and let go, then claimed: no duplicate."""
    turn = claimant(records, FakeTime()).take_turn(FID, DIGEST, lambda: True)
    assert turn.answered and turn.lease is None
    assert records.get_lease(FID, DIGEST) is None


def test_an_expired_lease_whose_record_exists_answers_without_a_take_over(
    records: SqliteRecordStore,
) -> None:
    fake = FakeTime()
    records.claim(FID, DIGEST, "recorded-then-died", fake.now - 1)
    turn = claimant(records, fake).take_turn(FID, DIGEST, lambda: True)
    assert turn.answered and not turn.took_over and turn.lease is None


def test_a_lease_claiming_more_than_a_lease_can_is_not_waited_for(
    records: SqliteRecordStore,
) -> None:
    """A forged lease (or a clock far ahead) that would hold waiters for a day."""
    fake = FakeTime()
    records.claim(FID, DIGEST, "stranger", fake.now + 86400)
    turn = claimant(records, fake).take_turn(FID, DIGEST, lambda: False)
    assert turn.took_over and fake.slept == []


def test_a_waiter_never_waits_past_its_share_of_its_own_time(
    records: SqliteRecordStore,
) -> None:
    fake = FakeTime()
    start = fake.now
    # a live holder that keeps renewing: the lease never expires while the waiter waits
    held, _ = records.claim(FID, DIGEST, "slow", fake.now + inflight.LEASE_S)
    box = [held]

    def renew(polls: int) -> None:
        renewed = records.renew(box[0], fake.now + inflight.LEASE_S)
        assert renewed is not None
        box[0] = renewed

    fake.on_sleep = renew
    turn = claimant(records, fake, deadline=start + 20).take_turn(FID, DIGEST, lambda: False)
    assert turn.lease is None and not turn.answered  # gave up: computes without a lease
    assert fake.now <= start + 20 * inflight.WAIT_SHARE  # half of its time is left
    assert fake.now > start + 20 * inflight.WAIT_SHARE - inflight.MAX_POLL_S
    assert records.get_lease(FID, DIGEST) == box[0]  # the holder's lease is left alone


def test_a_failing_record_store_means_computing_without_a_lease(
    records: SqliteRecordStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def down(*args: object) -> None:
        raise StoreError("record store unreachable")

    monkeypatch.setattr(records, "claim", down)
    turn = claimant(records, FakeTime()).take_turn(FID, DIGEST, never)
    assert turn.lease is None and not turn.answered


def test_the_holder_renews_while_computing_and_lets_go_after(
    records: SqliteRecordStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inflight, "LEASE_S", 0.6)  # a beat every 0.2 s
    holder = Claimant(records, "holder", None)
    turn = holder.take_turn(FID, DIGEST, never)
    assert turn.lease is not None
    with holder.holding(turn.lease):
        stop = time.monotonic() + 30
        while records.get_lease(FID, DIGEST) == turn.lease and time.monotonic() < stop:
            time.sleep(0.05)
        renewed = records.get_lease(FID, DIGEST)
        assert renewed is not None and renewed != turn.lease
        assert renewed.owner == "holder" and renewed.expires_at > turn.lease.expires_at
    assert records.get_lease(FID, DIGEST) is None


def test_a_failed_computation_lets_the_lease_go(records: SqliteRecordStore) -> None:
    holder = Claimant(records, "holder", None)
    turn = holder.take_turn(FID, DIGEST, never)
    with pytest.raises(ValueError, match="boom"), holder.holding(turn.lease):
        raise ValueError("boom")
    assert records.get_lease(FID, DIGEST) is None
    assert records.claim(FID, DIGEST, "next", time.time() + 30)[1]


def test_a_lease_lost_while_computing_is_not_released(
    records: SqliteRecordStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A holder that was too slow to renew: a waiter took over; the holder's exit must not
    remove the taker's lease."""
    holder = Claimant(records, "holder", None)
    turn = holder.take_turn(FID, DIGEST, never)
    assert turn.lease is not None
    with holder.holding(turn.lease):
        taken, mine = records.take_over(turn.lease, "taker", time.time() + 30)
        assert mine
    assert records.get_lease(FID, DIGEST) == taken


def test_owner_and_deadline_come_from_the_activation() -> None:
    env = {"__OW_ACTIVATION_ID": "0123abcd", "__OW_DEADLINE": "1700000000000"}
    assert inflight.owner_of(env) == "0123abcd"
    assert inflight.deadline_of(env) == 1_700_000_000.0
    assert inflight.deadline_of({}) is None
    local = inflight.owner_of({})
    assert local.startswith("local-") and local != inflight.owner_of({})


def test_a_lease_held_by_the_same_owner_is_its_own(records: SqliteRecordStore) -> None:
    fake = FakeTime()
    held, _ = records.claim(FID, DIGEST, "waiter", fake.now + 30)
    turn = claimant(records, fake).take_turn(FID, DIGEST, never)
    assert turn.lease == held and fake.slept == []
