"""The Kafka feed provider against a fake consumer: lifecycle, payloads, commits, retries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from owdedup.feedloop import batches
from owdedup.runtime.errors import NotFoundError
from owdedup.serve.kafka_feed import (
    FeedConfig,
    FeedError,
    KafkaFeeds,
    message_entry,
    parse_brokers,
    parse_config,
)
from tests.fake_kafka import FakeBroker
from tests.serve.conftest import AUTH, wait_for


class Fires:
    def __init__(self, failures: int = 0, gone: bool = False) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.failures, self.gone = failures, gone

    def __call__(self, trigger: str, payload: dict[str, Any]) -> None:
        if self.gone:
            raise NotFoundError(f"no trigger {trigger!r}")
        if self.failures:
            self.failures -= 1
            raise RuntimeError("controller busy")
        self.payloads.append(payload)


def feeds_for(broker: FakeBroker, fire: Fires, state: Path | None = None) -> KafkaFeeds:
    return KafkaFeeds(fire, namespace="guest", auth_key=AUTH, state_file=state,
                      consumer_factory=broker.factory)


@contextmanager
def running_feeds(broker: FakeBroker, fire: Fires, state: Path | None = None
                  ) -> Iterator[KafkaFeeds]:
    """The provider, its consumers stopped at the end whatever happened."""
    feeds = feeds_for(broker, fire, state)
    try:
        yield feeds
    finally:
        feeds.close()


def create(feeds: KafkaFeeds, **extra: Any) -> dict[str, Any]:
    return feeds.lifecycle({"lifecycleEvent": "CREATE", "authKey": AUTH,
                            "triggerName": "/guest/uploaded", "brokers": "127.0.0.1:9092",
                            "topic": "uploads", "isJSONData": True, **extra})


def test_only_messages_after_create_are_fired_then_committed() -> None:
    broker, fire = FakeBroker(), Fires()
    broker.produce(b'{"old": true}')
    with running_feeds(broker, fire) as feeds:
        assert create(feeds) == {"status": "success", "triggerName": "/guest/uploaded"}
        group = broker.groups[0]
        assert broker.committed(group) == 1  # the topic's end at CREATE
        broker.produce(b'{"Key": "bucket/a.jpg"}', key=b"bucket/a.jpg")
        payloads = wait_for(lambda: fire.payloads, what="a fire")
        assert payloads[0] == {"messages": [{"topic": "uploads", "partition": 0, "offset": 1,
                                             "key": "bucket/a.jpg",
                                             "value": {"Key": "bucket/a.jpg"}}]}
        wait_for(lambda: broker.committed(group) == 2, what="the commit after the fire")
        assert feeds.running() == ["uploaded"]


def test_a_failed_fire_is_retried_and_committed_only_after_success() -> None:
    broker, fire = FakeBroker(), Fires(failures=2)
    with running_feeds(broker, fire) as feeds:
        create(feeds)
        group = broker.groups[0]
        broker.produce(b"plain text")
        wait_for(lambda: fire.payloads, timeout=10, what="a fire after retries")
        assert fire.payloads[0]["messages"][0]["value"] == "plain text"  # not JSON: a string
        wait_for(lambda: broker.committed(group) == 1, what="the commit")


def test_a_failed_consumer_is_replaced_and_nothing_is_lost() -> None:
    broker, fire = FakeBroker(), Fires()
    with running_feeds(broker, fire) as feeds:
        create(feeds)
        broker.produce(b'{"n": 1}')
        wait_for(lambda: fire.payloads, what="the first fire")
        consumers = len(broker.groups)
        with broker.lock:
            broker.broken_consumes = 2
        broker.produce(b'{"n": 2}')
        wait_for(lambda: len(fire.payloads) == 2, timeout=10, what="a fire after the failures")
        assert fire.payloads[1]["messages"][0]["value"] == {"n": 2}
        assert len(broker.groups) == consumers + 2  # one new consumer per failure
        assert broker.committed(broker.groups[0]) == 2
        assert feeds.running() == ["uploaded"]


def test_a_deleted_trigger_ends_its_feed() -> None:
    broker, fire = FakeBroker(), Fires(gone=True)
    with running_feeds(broker, fire) as feeds:
        create(feeds)
        broker.produce(b"{}")
        wait_for(lambda: not feeds.running(), what="the feed to stop")
        assert feeds.read("uploaded")["status"]["active"] is False


def test_lifecycle_read_pause_unpause_delete() -> None:
    broker, fire = FakeBroker(), Fires()
    with running_feeds(broker, fire) as feeds:
        create(feeds, brokers=["h1:9092", "h2:9092"], isBinaryKey="true")
        read = feeds.lifecycle({"lifecycleEvent": "READ", "authKey": AUTH,
                                "triggerName": "/_/uploaded"})
        assert read["config"] == {"triggerName": "/guest/uploaded", "topic": "uploads",
                                  "isJSONData": True, "isBinaryKey": True,
                                  "isBinaryValue": False, "brokers": ["h1:9092", "h2:9092"]}
        assert read["status"]["active"] is True
        base = {"authKey": AUTH, "triggerName": "/guest/uploaded"}
        assert feeds.lifecycle({**base, "lifecycleEvent": "PAUSE"}) == {"status": "success"}
        assert feeds.running() == []
        feeds.lifecycle({**base, "lifecycleEvent": "UNPAUSE"})
        assert feeds.running() == ["uploaded"]
        assert "error" not in feeds.lifecycle({**base, "lifecycleEvent": "DELETE"})
        assert feeds.running() == []
        assert "error" in feeds.lifecycle({**base, "lifecycleEvent": "READ"})
        wrong = feeds.lifecycle({**base, "lifecycleEvent": "CREATE", "authKey": "u:other"})
        assert "not authorized" in wrong["error"]
        assert "error" in feeds.lifecycle({**base, "lifecycleEvent": "EXPLODE"})
        assert "topic" in create(feeds, topic="")["error"]


def test_registrations_persist_and_resume(tmp_path: Path) -> None:
    broker, fire = FakeBroker(), Fires()
    state = tmp_path / "feeds.json"
    with running_feeds(broker, fire, state) as feeds:
        create(feeds)
    assert feeds.running() == []
    with running_feeds(broker, fire, state) as again:
        again.resume()
        assert again.running() == ["uploaded"]
        broker.produce(b'{"n": 1}')
        wait_for(lambda: fire.payloads, what="a fire after resuming")


def test_message_shapes_and_batches() -> None:
    config = FeedConfig("t", ["b:1"], "topic", is_json=True)
    assert message_entry(config, "topic", 2, 7, None, b'{"a": 1}')["value"] == {"a": 1}
    assert message_entry(config, "topic", 2, 7, b"k", b"not json")["value"] == "not json"
    binary = FeedConfig("t", ["b:1"], "topic", binary_key=True, binary_value=True)
    entry = message_entry(binary, "topic", 0, 0, b"\x00\x01", b"\xff")
    assert entry["key"] == "AAE=" and entry["value"] == "/w=="
    entries = [{"value": "x" * 400} for _ in range(5)]
    grouped = batches(entries, limit=1000)
    assert [len(g) for g in grouped] == [2, 2, 1]
    assert batches([], limit=10) == []


def test_broker_and_config_parsing() -> None:
    assert parse_brokers("a:1, b:2") == ["a:1", "b:2"]
    assert parse_brokers('["a:1","b:2"]') == ["a:1", "b:2"]
    assert parse_brokers(["a:1"]) == ["a:1"]
    with pytest.raises(FeedError):
        parse_brokers("")
    with pytest.raises(FeedError):
        parse_brokers(None)
    config = parse_config("t", {"brokers": "a:1", "topic": "x", "isJSONData": "false"})
    assert config.is_json is False and config.topic == "x"
