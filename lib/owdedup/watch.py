"""``owdedup watch``: the local stand-in for OpenWhisk's Kafka feed and the upload rule.

It consumes the topic MinIO publishes upload events to and fires the manifest's trigger
with the feed's payload (``{"messages": [...]}``, batched as OpenWhisk's Kafka feed does);
the rule's action starts the sequence for each created object. Several batches are
processed at once, in worker processes. The loop is :class:`owdedup.feedloop.FeedLoop`,
the same as ``owdedup serve``'s feed: same batching, commits and drain.

Delivery is at least once: a message's offset is committed only after every object in its
batch has been processed, and only up to the lowest message still in flight on its
partition, so a crash replays unfinished messages (deduplication makes the replay cheap).
An object that failed for a reason retrying cannot fix (bad input, a missing object) is
reported and skipped; a failure of a service (store unreachable, record not written) is retried with
backoff until ``retry_for`` runs out, then reported and skipped, so a partition never stalls
for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from threading import Event
from typing import Any

from owdedup import workers
from owdedup.engine.activation import Activation
from owdedup.feedloop import ConsumerFactory, Entry, FeedLoop, default_consumer
from owdedup.runtime.errors import BadInputError, ConfigError, NotFoundError
from owdedup.runtime.events import feed_message

# Failures that the same input will always give again: report them, never retry.
PERMANENT_KINDS = frozenset(error.kind for error in (BadInputError, NotFoundError, ConfigError))


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
    consumer_factory: ConsumerFactory = default_consumer,
) -> int:
    """Consume until *stop* is set; drain in-flight work; return the messages processed.
    The feed loop is :class:`owdedup.feedloop.FeedLoop`, as in ``owdedup serve``'s feed."""
    def settle(_batch: list[Entry], results: list[ObjectOutcome]) -> bool:
        for outcome in results:
            report(outcome)
        return True

    with workers.pool(config.workers, config.manifest, config.env) as pool:
        loop: FeedLoop[list[ObjectOutcome]] = FeedLoop(
            factory=consumer_factory,
            conf={
                "bootstrap.servers": config.brokers,
                "group.id": config.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "client.id": "owdedup-watch",
            },
            topic=config.topic,
            to_entry=feed_message,
            submit=lambda batch: pool.submit(process_message, config.trigger,
                                             {"messages": batch}, config.retry_for),
            settle=settle,
            max_in_flight=2 * config.workers,
            parts=config.workers,
            client_label="watch",
        )
        loop.run(stop)
    return loop.delivered
