"""``/whisk.system/messaging/kafkaFeed`` for ``owdedup serve``: Kafka messages fire triggers.

What the openwhisk-package-kafka provider does, in process:

- ``lifecycleEvent: CREATE`` (with ``triggerName``, ``authKey``, ``brokers``, ``topic``,
  ``isJSONData``, ``isBinaryKey``, ``isBinaryValue``) registers the trigger and starts a
  consumer in a consumer group of its own. It starts at the topic's end: messages produced
  before the trigger exists are never delivered (the group's start offsets are committed at
  CREATE; partitions that appear later are read from their beginning).
- Messages are fired in batches of up to ~900 kB as ``{"messages": [{"topic", "partition",
  "offset", "key", "value"}]}`` (``value`` parsed when ``isJSONData``; key/value base64 when
  binary); the offsets are committed once the fire was accepted, so delivery is at least once.
  The loop is :class:`owdedup.feedloop.FeedLoop`, the same as ``owdedup watch``'s.
  A fire that fails is retried with backoff; a trigger that no longer exists ends the feed.
- ``DELETE`` stops and forgets it, ``READ`` reports it, ``PAUSE``/``UNPAUSE`` stop and
  restart consumption. Registrations are kept in a JSON file (when the server has a state
  directory) and resumed at start.

Consumers are daemon threads that poll with a short timeout: stopping one takes under a
second and none can hold up the server's shutdown.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from owdedup.feedloop import ConsumerFactory, FeedLoop, default_consumer, done_future
from owdedup.runtime.atomic import write_atomic
from owdedup.runtime.errors import NotFoundError
from owdedup.runtime.events import feed_message
from owdedup.serve.catalog import is_true, now_ms

log = logging.getLogger("owdedup.serve.feed")

FEED_ACTION = "messaging/kafkaFeed"  # in /whisk.system
#: Pause before a failed consumer is replaced (or a failed fire is retried), doubling up to
#: the maximum.
RESTART_BACKOFF_S = 0.5
MAX_RESTART_BACKOFF_S = 30.0

#: Fires a trigger with a payload; raises NotFoundError when the trigger no longer exists.
Fire = Callable[[str, dict[str, Any]], None]


class FeedError(Exception):
    """A lifecycle request that cannot be honoured (reported as the feed action's error)."""


@dataclass
class FeedConfig:
    trigger: str
    brokers: list[str]
    topic: str
    is_json: bool = False
    binary_key: bool = False
    binary_value: bool = False
    group: str = ""
    active: bool = True
    changed_ms: int = field(default_factory=now_ms)
    reason: str = ""

    def read(self, namespace: str) -> dict[str, Any]:
        """The provider's READ answer."""
        changed = datetime.fromtimestamp(self.changed_ms / 1000, UTC)
        return {
            "config": {"triggerName": f"/{namespace}/{self.trigger}", "topic": self.topic,
                       "isJSONData": self.is_json, "isBinaryKey": self.binary_key,
                       "isBinaryValue": self.binary_value, "brokers": self.brokers},
            "status": {"active": self.active, "dateChanged": self.changed_ms,
                       "dateChangedISO": changed.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       **({"reason": self.reason} if self.reason else {})},
        }


def parse_brokers(value: Any) -> list[str]:
    """A JSON array, a JSON array in a string, or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise FeedError("'brokers' is not a valid JSON array") from None
        else:
            value = [part.strip() for part in text.split(",")]
    if not isinstance(value, list):
        raise FeedError("You must supply a 'brokers' parameter as an array of Kafka brokers.")
    brokers = [str(b).strip() for b in value if str(b).strip()]
    if not brokers:
        raise FeedError("You must supply a 'brokers' parameter.")
    return brokers


def parse_config(trigger: str, params: dict[str, Any]) -> FeedConfig:
    topic = params.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise FeedError("You must supply a 'topic' parameter.")
    return FeedConfig(trigger=trigger, brokers=parse_brokers(params.get("brokers")),
                      topic=topic.strip(), is_json=is_true(params.get("isJSONData")),
                      binary_key=is_true(params.get("isBinaryKey")),
                      binary_value=is_true(params.get("isBinaryValue")))


def message_entry(config: FeedConfig, topic: str, partition: int, offset: int,
                  key: bytes | None, value: bytes | None) -> dict[str, Any]:
    """One message as the feed delivers it."""
    return feed_message(topic, partition, offset, key, value, is_json=config.is_json,
                        binary_key=config.binary_key, binary_value=config.binary_value)


class FeedConsumer:
    """One trigger's consumer loop, on a daemon thread."""

    def __init__(self, config: FeedConfig, fire: Fire, factory: ConsumerFactory,
                 on_gone: Callable[[str], None]) -> None:
        self.config = config
        self._fire = fire
        self._factory = factory
        self._on_gone = on_gone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feed-{config.trigger}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def signal_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        """Consume until stopped. A consumer that fails is closed and made again (after a
        growing pause): the feed never dies silently while its trigger is active, and as
        offsets are committed only after a fire, the new consumer resumes where the last
        accepted batch ended."""
        backoff = RESTART_BACKOFF_S
        while not self._stop.is_set():
            try:
                if self._consume() == "ended":
                    return
                backoff = RESTART_BACKOFF_S  # it ran until stopped
            except Exception:  # whatever broke, the feed must go on
                log.exception("feed %s: the consumer failed; a new one in %.1f s",
                              self.config.trigger, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_RESTART_BACKOFF_S)

    def _consume(self) -> str:
        """One consumer's life: "stopped" on request, "ended" when the trigger is gone."""
        loop: FeedLoop[bool] = FeedLoop(
            factory=self._factory,
            conf=consumer_conf(self.config),
            topic=self.config.topic,
            to_entry=lambda topic, partition, offset, key, value: message_entry(
                self.config, topic, partition, offset, key, value),
            submit=lambda batch: done_future(self._deliver(batch)),
            settle=lambda _batch, delivered: delivered,
            client_label=f"feed {self.config.trigger}",
        )
        return loop.run(self._stop)

    def _deliver(self, batch: list[dict[str, Any]]) -> bool:
        """Fire until accepted (the loop then commits); False when the feed must end."""
        backoff = RESTART_BACKOFF_S
        while not self._stop.is_set():
            try:
                self._fire(self.config.trigger, {"messages": batch})
                return True
            except NotFoundError:
                log.warning("feed %s: the trigger is gone; stopping", self.config.trigger)
                self._on_gone(self.config.trigger)
                return False
            except Exception:  # retried: the messages must not be lost
                log.exception("feed %s: fire failed; retrying in %.1f s", self.config.trigger,
                              backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_RESTART_BACKOFF_S)
        return False


def consumer_conf(config: FeedConfig) -> dict[str, Any]:
    return {
        "bootstrap.servers": ",".join(config.brokers),
        "group.id": config.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",  # only for partitions created after CREATE
        "client.id": f"owdedup-serve-feed-{config.trigger}",
        "topic.metadata.refresh.interval.ms": 2000,  # notice a topic created later quickly
    }


class KafkaFeeds:
    """The feed provider: registrations by trigger name, one consumer per active one."""

    def __init__(
        self,
        fire: Fire,
        *,
        namespace: str,
        auth_key: str,
        state_file: Path | None = None,
        consumer_factory: ConsumerFactory = default_consumer,
        trigger_exists: Callable[[str], bool] = lambda _name: True,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.fire = fire
        self.namespace = namespace
        self.auth_key = auth_key
        self.state_file = state_file
        self.factory = consumer_factory
        self.trigger_exists = trigger_exists
        self.start_timeout_s = start_timeout_s
        self._configs: dict[str, FeedConfig] = {}
        self._consumers: dict[str, FeedConsumer] = {}
        self._lock = threading.RLock()
        if state_file is not None and state_file.is_file():
            for raw in json.loads(state_file.read_text()):
                config = FeedConfig(**raw)
                self._configs[config.trigger] = config

    # -- the feed action -------------------------------------------------------------------

    def lifecycle(self, params: dict[str, Any]) -> dict[str, Any]:
        """The body of ``/whisk.system/messaging/kafkaFeed``: its result, or ``{"error"}``."""
        try:
            return self._lifecycle(params)
        except FeedError as exc:
            return {"error": str(exc)}

    def _lifecycle(self, params: dict[str, Any]) -> dict[str, Any]:
        event = str(params.get("lifecycleEvent") or "").upper()
        key = params.get("authKey")
        if not isinstance(key, str) or not hmac.compare_digest(key, self.auth_key):
            raise FeedError("The supplied authKey is not authorized for this trigger.")
        trigger = self._trigger(params.get("triggerName"))
        if event == "CREATE":
            self.create(parse_config(trigger, params))
            return {"status": "success", "triggerName": f"/{self.namespace}/{trigger}"}
        if event == "READ":
            return self.read(trigger)
        if event == "DELETE":
            self.delete(trigger)
            return {"status": "success", "message": "deleted trigger"}
        if event in ("PAUSE", "UNPAUSE"):
            self.set_active(trigger, event == "UNPAUSE")
            return {"status": "success"}
        raise FeedError(f"unsupported lifecycleEvent {event!r}")

    def _trigger(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip("/"):
            raise FeedError("You must supply a 'triggerName' parameter.")
        parts = value.strip("/").split("/")
        if len(parts) == 2 and parts[0] not in ("_", self.namespace):
            raise FeedError(f"trigger {value} is not in namespace {self.namespace}")
        if len(parts) > 2:
            raise FeedError(f"malformed triggerName {value!r}")
        return parts[-1]

    # -- registrations ---------------------------------------------------------------------

    def create(self, config: FeedConfig) -> None:
        if not self.trigger_exists(config.trigger):
            raise FeedError(f"trigger /{self.namespace}/{config.trigger} does not exist")
        config.group = f"owdedup-serve-{self.namespace}-{config.trigger}-{uuid.uuid4().hex[:8]}"
        self._commit_start(config)
        with self._lock:
            self._stop(config.trigger)
            self._configs[config.trigger] = config
            self._start(config)
            self._save()

    def delete(self, trigger: str) -> None:
        with self._lock:
            self._config(trigger)
            self._stop(trigger)
            del self._configs[trigger]
            self._save()

    def discard(self, trigger: str) -> None:
        """The trigger was deleted: end its feed, if it has one (never an error)."""
        with self._lock:
            if trigger in self._configs:
                self._stop(trigger, wait=False)
                del self._configs[trigger]
                self._save()

    def set_active(self, trigger: str, active: bool) -> None:
        with self._lock:
            config = self._config(trigger)
            if config.active == active:
                return
            config.active, config.changed_ms = active, now_ms()
            config.reason = "" if active else "paused"
            if active:
                self._start(config)
            else:
                self._stop(trigger)
            self._save()

    def resume(self) -> None:
        """Start the consumers of the registrations read from the state file."""
        with self._lock:
            for config in self._configs.values():
                if config.active and config.trigger not in self._consumers:
                    self._start(config)

    def read(self, trigger: str) -> dict[str, Any]:
        with self._lock:
            return self._config(trigger).read(self.namespace)

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._consumers)

    def close(self) -> None:
        """Stop every consumer (registrations stay, for the next start)."""
        with self._lock:
            consumers = list(self._consumers.values())
            self._consumers.clear()
        for consumer in consumers:
            consumer.signal_stop()
        for consumer in consumers:
            consumer.stop(timeout_s=2.0)

    # -- internals -------------------------------------------------------------------------

    def _config(self, trigger: str) -> FeedConfig:
        config = self._configs.get(trigger)
        if config is None:
            raise FeedError(f"trigger /{self.namespace}/{trigger} has no Kafka feed")
        return config

    def _start(self, config: FeedConfig) -> None:
        consumer = FeedConsumer(config, self.fire, self.factory, self._gone)
        self._consumers[config.trigger] = consumer
        consumer.start()

    def _stop(self, trigger: str, wait: bool = True) -> None:
        consumer = self._consumers.pop(trigger, None)
        if consumer is not None:
            if wait:
                consumer.stop()
            else:
                consumer.signal_stop()

    def _gone(self, trigger: str) -> None:
        with self._lock:
            self._consumers.pop(trigger, None)
            config = self._configs.get(trigger)
            if config is not None:
                config.active, config.reason = False, "trigger not found"
                config.changed_ms = now_ms()
                self._save()

    def _commit_start(self, config: FeedConfig) -> None:
        """Commit the topic's current end as the group's start, so only messages produced
        from now on are delivered (raises FeedError when Kafka cannot be reached)."""
        from confluent_kafka import KafkaException, TopicPartition

        consumer = self.factory({**consumer_conf(config), "client.id": "owdedup-serve-feed"})
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while True:
                try:
                    metadata = consumer.list_topics(config.topic, timeout=10)
                    topic = metadata.topics.get(config.topic)
                    if topic is None or topic.error is not None:
                        return  # no partitions yet: everything it will ever hold is new
                    offsets = []
                    for partition in topic.partitions:
                        _low, high = consumer.get_watermark_offsets(
                            TopicPartition(config.topic, partition), timeout=10)
                        offsets.append(TopicPartition(config.topic, partition, high))
                    if offsets:
                        consumer.commit(offsets=offsets, asynchronous=False)
                    return
                except KafkaException as exc:
                    # A broker that just started answers NOT_COORDINATOR (and the like) for a
                    # while: retry those until the deadline, then report.
                    if time.monotonic() >= deadline:
                        raise FeedError(f"cannot reach Kafka at {','.join(config.brokers)}: "
                                        f"{exc}") from exc
                    time.sleep(0.5)
        finally:
            consumer.close()

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = json.dumps([asdict(c) for c in self._configs.values()], indent=1)
        write_atomic(self.state_file, data.encode())
