"""``owdedup serve``'s Kafka feed against the real broker: a trigger created as wskdeploy
creates it (PUT with the ``feed`` annotation, then a blocking invoke of
``/whisk.system/messaging/kafkaFeed`` with ``lifecycleEvent: CREATE``) fires its rule's
action with the feed's payload for the messages produced after it, and only those."""

from __future__ import annotations

import json
import uuid
from typing import Any

from owdedup.serve.server import DevServer, ServeConfig
from tests.serve.conftest import AUTH, Client, params, wait_for
from tests.service_fixtures import Services

RECORDER = "def main(params):\n    return {'messages': params.get('messages', [])}\n"
FEED = "/api/v1/namespaces/whisk.system/actions/messaging/kafkaFeed?blocking=true"


def produce(brokers: str, topic: str, key: str, value: dict[str, Any]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": brokers})
    producer.produce(topic, key=key.encode(), value=json.dumps(value).encode())
    assert producer.flush(30) == 0


def create_topic(brokers: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": brokers})  # kept alive until the result
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)


def test_feed_fires_the_rule_for_new_messages(services: Services) -> None:
    brokers = services.env["OWDEDUP_KAFKA"]
    topic = f"serve-feed-{uuid.uuid4().hex[:8]}"
    create_topic(brokers, topic)
    produce(brokers, topic, "inbucket/old.jpg", {"Key": "inbucket/old.jpg"})  # before: never
    server = DevServer(ServeConfig(auth=AUTH, port=0))
    server.start()
    try:
        client = Client(server.url)
        client.action("recorder", RECORDER)
        trigger = client.put("triggers/uploaded", {
            "annotations": params({"feed": "/whisk.system/messaging/kafkaFeed"}),
            "publish": True}, overwrite=True)
        assert trigger.status == 200
        created = client.request("POST", server.url + FEED, {
            "lifecycleEvent": "CREATE", "triggerName": "/guest/uploaded", "authKey": AUTH,
            "brokers": brokers, "topic": topic, "isJSONData": True,
        }, absolute=True)
        assert created.status == 200, created.raw
        assert client.put("rules/on-upload", {"trigger": "/guest/uploaded",
                                              "action": "/guest/recorder"}).status == 200
        produce(brokers, topic, "inbucket/new.jpg", {"Key": "inbucket/new.jpg"})

        def delivered() -> list[dict[str, Any]]:
            runs = client.request("GET", "activations?name=recorder&docs=true").json
            return [m for run in runs for m in run["response"]["result"]["messages"]]

        messages = wait_for(delivered, timeout=90, what="the feed to fire the rule")
        assert [(m["key"], m["value"]) for m in messages] == [
            ("inbucket/new.jpg", {"Key": "inbucket/new.jpg"})]
        assert messages[0]["topic"] == topic and messages[0]["offset"] == 1
        read = client.request("POST", server.url + FEED, {
            "lifecycleEvent": "READ", "triggerName": "/guest/uploaded", "authKey": AUTH,
        }, absolute=True)
        assert read.json["response"]["result"]["status"]["active"] is True
        deleted = client.request("POST", server.url + FEED, {
            "lifecycleEvent": "DELETE", "triggerName": "/guest/uploaded", "authKey": AUTH,
        }, absolute=True)
        assert deleted.status == 200 and server.feeds.running() == []
    finally:
        server.close()
