"""A fake Kafka (one topic, one partition) for the feed loop's users: the consumer calls
that :class:`owdedup.feedloop.FeedLoop` and the serve feed's CREATE make, and what each
consumer group committed. The same tests also run against the real broker in
``tests/services``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None


@dataclass
class FakeBroker:
    """One topic with one partition; what consumers were given and what they committed."""

    topic: str = "uploads"
    log: list[FakeMessage] = field(default_factory=list)
    commits: list[tuple[str, int, int, str]] = field(default_factory=list)  # t, p, offset, group
    groups: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: How many consume() calls fail, as a consumer does when its broker breaks for good.
    broken_consumes: int = 0
    #: How many consumers were closed.
    closed: int = 0

    def produce(self, value: bytes, key: bytes | None = None) -> None:
        with self.lock:
            self.log.append(FakeMessage(self.topic, 0, len(self.log), key, value))

    def committed(self, group: str) -> int:
        with self.lock:
            offsets = [o for _t, _p, o, g in self.commits if g == group]
        return offsets[-1] if offsets else 0

    def factory(self, conf: dict[str, Any]) -> FakeConsumer:
        return FakeConsumer(self, conf)


class FakeConsumer:
    def __init__(self, broker: FakeBroker, conf: dict[str, Any]) -> None:
        self.broker, self.group = broker, str(conf["group.id"])
        self.position: int | None = None
        broker.groups.append(self.group)

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = type("Topic", (), {"partitions": {0: None}, "error": None})()
        return type("Metadata", (), {"topics": {self.broker.topic: meta}})()

    def get_watermark_offsets(self, partition: Any, timeout: float) -> tuple[int, int]:
        return 0, len(self.broker.log)

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        with self.broker.lock:
            for tp in offsets:
                self.broker.commits.append((tp.topic, tp.partition, tp.offset, self.group))

    def subscribe(self, topics: list[str]) -> None:
        assert topics == [self.broker.topic]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        with self.broker.lock:
            if self.broker.broken_consumes:
                self.broker.broken_consumes -= 1
                raise RuntimeError("KafkaError{code=_FATAL}")
        if self.position is None:
            self.position = self.broker.committed(self.group)
        with self.broker.lock:
            messages = self.broker.log[self.position:self.position + num_messages]
        if not messages:
            time.sleep(min(timeout, 0.05))
            return []
        self.position += len(messages)
        return messages

    def close(self) -> None:
        with self.broker.lock:
            self.broker.closed += 1
