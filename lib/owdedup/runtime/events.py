"""Upload events in the shapes actually seen, turned into the objects to process.

Shapes:
- the raw MinIO event (what MinIO publishes to Kafka and posts to a webhook):
  ``{"EventName": "s3:ObjectCreated:Put", "Key": "bucket/key", "Records": [record]}``
  (an AWS-style ``{"Records": [...]}`` without ``EventName`` is accepted too);
- the OpenWhisk Kafka feed's trigger payload: ``{"messages": [{"topic", "partition",
  "offset", "key", "value"}, ...]}`` where ``value`` is the parsed JSON with ``isJSONData``,
  else a JSON string (:func:`feed_message` makes one message, as openwhisk-package-kafka
  does: key and value decoded as UTF-8, or base64 with ``isBinaryKey``/``isBinaryValue``; a
  value that is not JSON stays a string; an absent key or value is ``None``).

Object keys in records are URL-encoded the way Go's QueryEscape does it (a space is ``+``,
``/`` is ``%2F``), so they are decoded with ``unquote_plus``. A zero-byte object has no
``size``. Only creation events yield objects: deletions and events for ignored buckets (the
output bucket: its objects are our own outputs) are skipped and reported, and a message that
cannot be parsed is reported, never raised, so one bad message cannot stop a stream.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

CREATED_PREFIXES = ("s3:ObjectCreated:", "ObjectCreated:")


def feed_message(topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, *, is_json: bool = True, binary_key: bool = False,
                 binary_value: bool = False) -> dict[str, Any]:
    """One Kafka message as the OpenWhisk Kafka feed puts it in ``{"messages": [...]}``."""
    shown_key: str | None = None
    if key is not None:
        shown_key = (base64.b64encode(key).decode("ascii") if binary_key
                     else key.decode("utf-8", errors="replace"))
    shown_value: Any = None
    if value is not None:
        if binary_value:
            shown_value = base64.b64encode(value).decode("ascii")
        else:
            shown_value = value.decode("utf-8", errors="replace")
            if is_json:
                with contextlib.suppress(ValueError):  # not JSON: delivered as the string
                    shown_value = json.loads(shown_value)
    return {"topic": topic, "partition": partition, "offset": offset, "key": shown_key,
            "value": shown_value}


def as_bytes(value: str | bytes | None) -> bytes | None:
    """A Kafka client's key or value as bytes (some clients hand back text)."""
    return value.encode() if isinstance(value, str) else value


@dataclass(frozen=True)
class ObjectEvent:
    bucket: str
    key: str
    event_name: str
    size: int | None = None  # absent for zero-byte objects
    etag: str | None = None
    sequencer: str | None = None


@dataclass
class ParsedEvents:
    objects: list[ObjectEvent] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why each non-object was skipped
    errors: list[str] = field(default_factory=list)  # messages that could not be parsed


def parse_events(payload: Any, *, ignore_buckets: Iterable[str] = ()) -> ParsedEvents:
    """Every created object in *payload*, whatever its shape."""
    parsed = ParsedEvents()
    ignored = {b for b in ignore_buckets if b}
    if isinstance(payload, Mapping) and isinstance(payload.get("messages"), list):
        for message in payload["messages"]:
            _parse_message(message, parsed, ignored)
    else:
        _parse_event(payload, parsed, ignored, where="event")
    return parsed


def _parse_message(message: Any, parsed: ParsedEvents, ignored: set[str]) -> None:
    if not isinstance(message, Mapping):
        parsed.errors.append(f"feed message is not an object: {message!r:.100}")
        return
    where = (f"message {message.get('topic')}/{message.get('partition')}"
             f"@{message.get('offset')}")
    value = message.get("value")
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            parsed.errors.append(f"{where}: value is not JSON ({exc})")
            return
    _parse_event(value, parsed, ignored, where=where)


def _parse_event(event: Any, parsed: ParsedEvents, ignored: set[str], *, where: str) -> None:
    if not isinstance(event, Mapping) or not isinstance(event.get("Records"), list):
        parsed.errors.append(f"{where}: not an S3 event (no Records list)")
        return
    for record in event["Records"]:
        try:
            name = str(record.get("eventName", event.get("EventName", "")))
            bucket = str(record["s3"]["bucket"]["name"])
            obj = record["s3"]["object"]
            key = unquote_plus(str(obj["key"]))
        except (KeyError, TypeError, AttributeError) as exc:
            parsed.errors.append(f"{where}: malformed record (missing {exc})")
            continue
        if not name.startswith(CREATED_PREFIXES):
            parsed.skipped.append(f"{bucket}/{key}: {name or 'unnamed event'} is not a creation")
        elif bucket in ignored:
            parsed.skipped.append(f"{bucket}/{key}: bucket is ignored (outputs)")
        else:
            size = obj.get("size")
            parsed.objects.append(ObjectEvent(
                bucket, key, name,
                size=int(size) if isinstance(size, int) else None,
                etag=obj.get("eTag"), sequencer=obj.get("sequencer"),
            ))
