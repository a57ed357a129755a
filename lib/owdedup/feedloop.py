"""The one Kafka feed loop: consume a topic, fire its messages in batches, commit what was
delivered, drain on stop. ``owdedup watch`` (:mod:`owdedup.watch`) and the Kafka feed of
``owdedup serve`` (:mod:`owdedup.serve.kafka_feed`) both run it, with their own consumer
factory and delivery, so both batch, commit and drain alike:

- **batching**: the messages of one ``consume`` become batches of up to ~900 kB of JSON
  (what openwhisk-package-kafka fires as ``{"messages": [...]}``; a larger message travels
  alone), split further into at least ``parts`` batches when there are enough messages (so
  ``watch``'s workers share them);
- **commit**: a message's offset is committed once its batch was delivered, and only up to
  the lowest message still in flight on its partition, so delivery is at least once and a
  restart replays exactly what was not delivered;
- **drain**: on stop, nothing new is consumed, what is in flight is waited for and
  committed, and the consumer is closed.

A delivery is a future (``submit``); ``settle`` sees its result in the loop's thread and says
whether it was delivered (commit) or the feed must end (its trigger is gone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from threading import Event
from typing import Any, Final, Generic, TypeVar

from owdedup.runtime.events import as_bytes

log = logging.getLogger("owdedup.feed")

BATCH_BYTES: Final = 900_000
#: Messages asked of one ``consume`` call, and how long it waits for the first.
CONSUME_MESSAGES: Final = 500
CONSUME_TIMEOUT_S: Final = 0.5

Entry = dict[str, Any]
#: Builds a consumer (confluent_kafka's ``Consumer``, or a fake) from its configuration.
ConsumerFactory = Callable[[dict[str, Any]], Any]
#: One consumed message as the feed delivers it: (topic, partition, offset, key, value).
ToEntry = Callable[[str, int, int, bytes | None, bytes | None], Entry]
T = TypeVar("T")


def default_consumer(conf: dict[str, Any]) -> Any:
    from confluent_kafka import Consumer

    return Consumer(conf)


def batches(entries: Iterable[Entry], limit: int = BATCH_BYTES, parts: int = 1
            ) -> list[list[Entry]]:
    """Consecutive groups of messages whose JSON stays under *limit* bytes (a message larger
    than the limit travels alone), and at least *parts* groups when there are as many
    messages."""
    listed = list(entries)
    most = max(1, -(-len(listed) // max(1, parts)))  # messages per group, rounded up
    grouped: list[list[Entry]] = []
    current: list[Entry] = []
    size = 0
    for entry in listed:
        entry_size = len(json.dumps(entry))
        if current and (size + entry_size > limit or len(current) >= most):
            grouped.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry_size
    if current:
        grouped.append(current)
    return grouped


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


def done_future(value: T) -> Future[T]:
    """A delivery that ran in the loop's own thread."""
    future: Future[T] = Future()
    future.set_result(value)
    return future


@dataclass
class FeedLoop(Generic[T]):
    factory: ConsumerFactory
    conf: dict[str, Any]
    topic: str
    to_entry: ToEntry
    #: Starts delivering a batch (a worker-pool future, or :func:`done_future`).
    submit: Callable[[list[Entry]], Future[T]]
    #: In the loop's thread, with the delivery's result: True to commit, False to end.
    settle: Callable[[list[Entry], T], bool]
    #: Batches delivered at once; consuming waits while this many are in flight.
    max_in_flight: int = 1
    #: Split one consume's messages into at least this many batches (watch: its workers).
    parts: int = 1
    batch_bytes: int = BATCH_BYTES
    client_label: str = "feed"
    delivered: int = 0  # messages whose batch was settled as delivered

    def run(self, stop: Event) -> str:
        """Consume until *stop* is set (then drain: ``"stopped"``) or a delivery says the
        feed must end (``"ended"``). A consumer that fails raises; the caller decides
        whether to make a new one (nothing delivered is lost: offsets follow deliveries)."""
        consumer = self.factory(self.conf)
        tracker = OffsetTracker()
        running: dict[Future[T], list[Entry]] = {}
        ended = False
        try:
            consumer.subscribe([self.topic])
            while not stop.is_set() and not ended:
                if len(running) >= self.max_in_flight:
                    done, _ = wait(running, timeout=CONSUME_TIMEOUT_S,
                                   return_when=FIRST_COMPLETED)
                    ended = self._settle(consumer, tracker, running, done)
                    continue
                for batch in batches(self._consume(consumer), self.batch_bytes, self.parts):
                    for entry in batch:
                        tracker.start(entry["partition"], entry["offset"])
                    running[self.submit(batch)] = batch
                    ended = self._settle(consumer, tracker, running,
                                         {f for f in running if f.done()})
                    if ended:
                        break
                else:  # also when nothing came: deliveries may have finished meanwhile
                    ended = self._settle(consumer, tracker, running,
                                         {f for f in running if f.done()})
            if running and not ended:  # drain: finish and commit what was started
                ended = self._settle(consumer, tracker, running, set(wait(running).done))
        finally:
            consumer.close()
        return "stopped" if stop.is_set() or not ended else "ended"

    def _consume(self, consumer: Any) -> list[Entry]:
        entries = []
        for message in consumer.consume(num_messages=CONSUME_MESSAGES,
                                        timeout=CONSUME_TIMEOUT_S) or []:
            if message.error():
                log.warning("%s: %s", self.client_label, message.error())
                continue
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue  # not a consumed record
            entries.append(self.to_entry(message.topic(), partition, offset,
                                         as_bytes(message.key()), as_bytes(message.value())))
        return entries

    def _settle(self, consumer: Any, tracker: OffsetTracker,
                running: dict[Future[T], list[Entry]], done: set[Future[T]]) -> bool:
        """Settle the finished deliveries, committing the delivered ones; True when the feed
        must end (the others' offsets stay uncommitted: a restart replays them)."""
        ended = False
        for future in done:
            batch = running.pop(future)
            if not self.settle(batch, future.result()):
                ended = True
                continue
            self.delivered += len(batch)
            positions = {entry["partition"]: tracker.finish(entry["partition"], entry["offset"])
                         for entry in batch}
            self._commit(consumer, positions)
        return ended

    def _commit(self, consumer: Any, positions: dict[int, int]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            consumer.commit(offsets=[TopicPartition(self.topic, partition, position)
                                     for partition, position in sorted(positions.items())],
                            asynchronous=False)
        except KafkaException as exc:
            # The broker may be down: a later commit covers this one; until then a restart
            # replays the batch, which deduplication makes harmless.
            log.warning("%s: offset commit failed (a later one covers it): %s",
                        self.client_label, exc)
