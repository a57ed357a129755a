from __future__ import annotations

import json
from typing import Any

from owdedup.runtime.events import as_bytes, feed_message, parse_events


def minio_event(key: str, *, bucket: str = "inbucket", name: str = "s3:ObjectCreated:Put",
                size: int | None = 1234) -> dict[str, Any]:
    """The shape MinIO publishes (eventVersion 2.0); `size` is omitted for empty objects."""
    obj: dict[str, Any] = {"key": key, "eTag": "abc", "sequencer": "17A"}
    if size is not None:
        obj["size"] = size
    return {
        "EventName": name,
        "Key": f"{bucket}/{key}",
        "Records": [{
            "eventVersion": "2.0", "eventSource": "minio:s3", "eventName": name,
            "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj},
        }],
    }


def test_raw_minio_event_with_go_query_escaped_key() -> None:
    parsed = parse_events(minio_event("holiday%2F2024%2Fmy+photo+%281%29.jpg"))
    (obj,) = parsed.objects
    assert (obj.bucket, obj.key, obj.size) == ("inbucket", "holiday/2024/my photo (1).jpg", 1234)
    assert not parsed.errors and not parsed.skipped


def test_zero_byte_object_has_no_size() -> None:
    (obj,) = parse_events(minio_event("empty.jpg", size=None)).objects
    assert obj.size is None


def test_kafka_feed_batch_with_parsed_and_string_values() -> None:
    payload = {"messages": [
        {"topic": "t", "partition": 0, "offset": 1, "key": "inbucket/a.jpg",
         "value": minio_event("a.jpg")},
        {"topic": "t", "partition": 0, "offset": 2, "key": "inbucket/b.jpg",
         "value": json.dumps(minio_event("b.jpg"))},
    ]}
    assert [o.key for o in parse_events(payload).objects] == ["a.jpg", "b.jpg"]


def test_deletes_and_output_bucket_are_skipped() -> None:
    payload = {"messages": [
        {"topic": "t", "partition": 0, "offset": 1,
         "value": minio_event("gone.jpg", name="s3:ObjectRemoved:Delete")},
        {"topic": "t", "partition": 0, "offset": 2,
         "value": minio_event("thumb.jpg", bucket="outbucket")},
        {"topic": "t", "partition": 0, "offset": 3, "value": minio_event("new.jpg")},
    ]}
    parsed = parse_events(payload, ignore_buckets=["outbucket"])
    assert [o.key for o in parsed.objects] == ["new.jpg"]
    assert len(parsed.skipped) == 2
    assert "not a creation" in parsed.skipped[0] and "ignored" in parsed.skipped[1]


def test_bad_messages_are_reported_not_raised() -> None:
    payload = {"messages": [
        "not a dict",
        {"topic": "t", "partition": 3, "offset": 9, "value": "{not json"},
        {"topic": "t", "partition": 3, "offset": 10, "value": {"Records": [{"s3": {}}]}},
        {"topic": "t", "partition": 3, "offset": 11, "value": minio_event("ok.jpg")},
    ]}
    parsed = parse_events(payload)
    assert [o.key for o in parsed.objects] == ["ok.jpg"]
    assert len(parsed.errors) == 3
    assert "t/3@9" in parsed.errors[1] and "t/3@10" in parsed.errors[2]


def test_aws_style_records_without_event_name_header() -> None:
    event = minio_event("x.png")
    del event["EventName"]
    assert [o.key for o in parse_events(event).objects] == ["x.png"]


def test_feed_message_as_the_kafka_feed_delivers_it() -> None:
    value = json.dumps(minio_event("a.jpg")).encode()
    message = feed_message("t", 0, 3, b"inbucket/a.jpg", value)
    assert message == {"topic": "t", "partition": 0, "offset": 3, "key": "inbucket/a.jpg",
                       "value": minio_event("a.jpg")}
    assert [o.key for o in parse_events({"messages": [message]}).objects] == ["a.jpg"]
    assert feed_message("t", 0, 0, b"", None) == {"topic": "t", "partition": 0, "offset": 0,
                                                  "key": "", "value": None}
    assert feed_message("t", 0, 0, None, b"{}", is_json=False)["value"] == "{}"
    binary = feed_message("t", 0, 0, b"\x00\x01", b"\xff", binary_key=True, binary_value=True)
    assert binary["key"] == "AAE=" and binary["value"] == "/w=="
    assert as_bytes("k") == b"k" and as_bytes(b"k") == b"k" and as_bytes(None) is None
