"""``owdedup watch``: the local stand-in for OpenWhisk's Kafka feed and the upload rule.

It consumes the topic MinIO publishes upload events to and, for every message, fires the
manifest's trigger with the feed's payload (``{"messages": [message]}``); the rule's action
starts the sequence for each created object. Several messages are processed at once, in
worker processes.

Delivery is at least once: a message's offset is committed only after every object in it
has been processed, and only up to the lowest message still in flight on its partition, so a
crash replays unfinished messages (deduplication makes the replay cheap). An object that
failed for a reason retrying cannot fix (bad input, a missing object) is reported and
skipped; a failure of a service (store unreachable, record not written) is retried with
backoff until ``retry_for`` runs out, then reported and skipped, so a partition never stalls
for ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any

from owdedup import workers
from owdedup.engine.activation import Activation
from owdedup.runtime.errors import BadInputError, ConfigError, NotFoundError
from owdedup.runtime.events import as_bytes, feed_message

log = logging.getLogger("owdedup")

# Failures that the same input will always give again: report them, never retry.
PERMANENT_KINDS = frozenset(error.kind for error in (BadInputError, NotFoundError, ConfigError))


@dataclass
class OffsetTracker:
    """What may be committed per partition: everything below the lowest unfinished offset."""

    in_flight: dict[int, set[int]] = field(default_factory=dict)
    highest_done: dict[int, int] = field(default_factory=dict)

    def start(self, partition: int, offset: int) -> None:
        self.in_flight.setdefault(partition, set()).add(offset)

    def finish(self, partition: int, offset: int) -> int:
        """Mark done; return the partition's commit position (the next offset to read)."""
        pending = self.in_flight.get(partition, set())
        pending.discard(offset)
        self.highest_done[partition] = max(offset, self.highest_done.get(partition, -1))
        return min(pending) if pending else self.highest_done[partition] + 1

    @property
    def busy(self) -> int:
        return sum(len(offsets) for offsets in self.in_flight.values())


@dataclass(frozen=True)
class ObjectOutcome:
    key: str
    ok: bool
    detail: str  # status on success, the error otherwise
    retryable: bool = False


def outcomes(trigger: Activation) -> list[ObjectOutcome]:
    """Per object, what the rule's dispatch reported; a failed dispatch is one retryable."""
    found: list[ObjectOutcome] = []
    for rule in trigger.components:
        if not rule.success:
            found.append(ObjectOutcome("(dispatch)", False, str(rule.result.get("error")),
                                       retryable=True))
            continue
        for entry in rule.result.get("invoked", []):
            name = f"{entry.get('bucket')}/{entry.get('key')}"
            if entry.get("success"):
                ok = entry.get("recorded") is not False  # a missing record is worth a retry
                found.append(ObjectOutcome(name, ok, str(entry.get("status")),
                                           retryable=not ok))
            else:
                kind = entry.get("error_kind")
                found.append(ObjectOutcome(name, False, str(entry.get("error")),
                                           retryable=kind not in PERMANENT_KINDS))
    return found


def process_message(
    trigger: str, payload: dict[str, Any], retry_for: float, backoff: float = 0.5
) -> list[ObjectOutcome]:
    """Worker task: fire the trigger; fire again (with backoff) while a failure is retryable."""
    deadline = time.monotonic() + retry_for
    while True:
        results = outcomes(workers.fire(trigger, payload))
        if not any(o.retryable for o in results) or time.monotonic() >= deadline:
            return results
        time.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


def feed_payload(topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None) -> dict[str, Any]:
    """The Kafka feed's trigger payload for one message (``isJSONData``: value parsed)."""
    return {"messages": [feed_message(topic, partition, offset, key, value)]}


@dataclass(frozen=True)
class WatchConfig:
    brokers: str
    topic: str
    group: str = "owdedup-watch"
    trigger: str = "image-uploaded"
    workers: int = 2
    retry_for: float = 300.0
    manifest: Path | None = None
    env: Mapping[str, str] | None = None


def run_watch(
    config: WatchConfig,
    stop: Event,
    report: Callable[[ObjectOutcome], None],
) -> int:
    """Consume until *stop* is set; drain in-flight work; return the messages processed."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": config.brokers,
        "group.id": config.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "client.id": "owdedup-watch",
    })
    consumer.subscribe([config.topic])
    tracker = OffsetTracker()
    running: dict[Future[list[ObjectOutcome]], tuple[int, int]] = {}
    processed = 0

    def settle(done: set[Future[list[ObjectOutcome]]]) -> None:
        nonlocal processed
        for future in done:
            partition, offset = running.pop(future)
            for outcome in future.result():
                report(outcome)
            processed += 1
            position = tracker.finish(partition, offset)
            try:
                consumer.commit(offsets=[TopicPartition(config.topic, partition, position)],
                                asynchronous=False)
            except KafkaException as exc:
                # The broker may be down: a later commit covers this one; until then a
                # restart replays the message, which deduplication makes harmless.
                log.warning("offset commit failed (will be retried): %s", exc)

    with workers.pool(config.workers, config.manifest, config.env) as pool:
        try:
            while not stop.is_set():
                if len(running) >= 2 * config.workers:
                    done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                    settle(done)
                    continue
                message = consumer.poll(0.2)
                settle({f for f in running if f.done()})
                if message is None:
                    continue
                if message.error():
                    log.warning("kafka: %s", message.error())
                    continue
                partition, offset = message.partition(), message.offset()
                if partition is None or offset is None:
                    continue  # not a consumed record
                tracker.start(partition, offset)
                payload = feed_payload(config.topic, partition, offset,
                                       as_bytes(message.key()), as_bytes(message.value()))
                running[pool.submit(process_message, config.trigger, payload,
                                    config.retry_for)] = (partition, offset)
            settle(set(wait(running).done))  # drain: finish what was started
        finally:
            consumer.close()
    return processed
