"""The one Kafka feed loop (watch's and serve's) against a fake consumer: batching, commits
only up to the lowest undelivered message, drain on stop, the end of a feed. The serve feed
runs it in tests/serve/test_kafka_feed.py, watch in tests/functional/test_watch_feed.py,
both against the real broker in tests/services."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from owdedup.feedloop import Entry, FeedLoop, batches, done_future
from owdedup.runtime.events import feed_message
from tests.fake_kafka import FakeBroker
from tests.tooling import wait_until

GROUP = "g"


def loop_for(broker: FakeBroker, submit: Callable[[list[Entry]], Future[bool]], *,
             settle: Callable[[list[Entry], bool], bool] = lambda _b, ok: ok,
             **options: Any) -> FeedLoop[bool]:
    return FeedLoop(factory=broker.factory, conf={"group.id": GROUP}, topic=broker.topic,
                    to_entry=feed_message, submit=submit, settle=settle, **options)


@contextmanager
def running(loop: FeedLoop[bool]) -> Iterator[tuple[threading.Event, list[str]]]:
    stop, outcome = threading.Event(), []
    thread = threading.Thread(target=lambda: outcome.append(loop.run(stop)), daemon=True)
    thread.start()
    try:
        yield stop, outcome
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def test_batches_keep_under_the_byte_limit_and_spread_over_parts() -> None:
    entries = [{"n": n, "pad": "x" * 100} for n in range(10)]
    assert batches(entries) == [entries]  # all under ~900 kB: one fire
    small = batches(entries, limit=300)
    assert [len(b) for b in small] == [2, 2, 2, 2, 2] and [e for b in small for e in b] == entries
    assert [len(b) for b in batches(entries, parts=3)] == [4, 4, 2]
    assert batches([{"big": "y" * 1000}], limit=10) == [[{"big": "y" * 1000}]]  # alone
    assert batches([]) == []


def test_one_consume_is_one_fire_then_committed() -> None:
    broker = FakeBroker()
    for n in range(3):
        broker.produce(b'{"n": %d}' % n, key=b"k")
    fired: list[list[Entry]] = []

    def fire(batch: list[Entry]) -> Future[bool]:
        fired.append(batch)
        return done_future(True)

    loop = loop_for(broker, fire)
    with running(loop) as (_stop, outcome):
        wait_until(lambda: broker.committed(GROUP) == 3, timeout=10, what="the commit")
    assert [[e["offset"] for e in b] for b in fired] == [[0, 1, 2]]
    assert fired[0][0] == {"topic": "uploads", "partition": 0, "offset": 0, "key": "k",
                           "value": {"n": 0}}
    assert outcome == ["stopped"] and loop.delivered == 3 and broker.closed == 1


def test_commits_never_pass_an_undelivered_batch_and_stop_drains() -> None:
    broker = FakeBroker()
    for n in range(3):
        broker.produce(b"%d" % n)
    gates = {n: threading.Event() for n in range(3)}

    def deliver(batch: list[Entry]) -> bool:
        gates[batch[0]["offset"]].wait(30)
        return True

    with ThreadPoolExecutor(3) as pool:
        loop = loop_for(broker, lambda batch: pool.submit(deliver, batch), max_in_flight=3,
                        parts=3)
        with running(loop) as (stop, outcome):
            wait_until(lambda: len(broker.log) == 3 and loop.delivered == 0, timeout=5,
                       what="the loop to start")
            gates[2].set()
            gates[1].set()
            wait_until(lambda: loop.delivered == 2, timeout=10, what="two deliveries")
            assert broker.committed(GROUP) == 0  # offset 0 is still in flight
            stop.set()  # stop with a batch in flight: it is finished and committed
            gates[0].set()
        assert outcome == ["stopped"]
    assert loop.delivered == 3 and broker.committed(GROUP) == 3 and broker.closed == 1


def test_a_delivery_that_ends_the_feed_commits_nothing() -> None:
    broker = FakeBroker()
    broker.produce(b"{}")
    loop = loop_for(broker, lambda _batch: done_future(False))
    outcome = loop.run(threading.Event())  # returns by itself
    assert outcome == "ended" and broker.committed(GROUP) == 0 and broker.closed == 1
