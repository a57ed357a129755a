"""Trigger -> rule -> dispatch -> one sequence per created object, on the local engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from owdedup.engine.executor import Engine
from owdedup.engine.local import local_executor
from tests.conftest import PROJECT
from tests.imagegen import jpeg, not_an_image
from tests.unit.test_events import minio_event


@pytest.fixture
def engine(env: dict[str, str]) -> Engine:
    return local_executor(PROJECT / "manifest.yaml", {**env, "OWDEDUP_KAFKA_TOPIC": "uploads"})


def feed(*events: dict[str, object]) -> dict[str, object]:
    return {"messages": [{"topic": "uploads", "partition": 0, "offset": i, "key": "k",
                          "value": event} for i, event in enumerate(events)]}


def test_fire_runs_the_rule_and_the_sequence_per_object(
    engine: Engine, store_root: Path
) -> None:
    data = jpeg(120, 90)
    for name in ("a.jpg", "copy of a.jpg"):
        (store_root / "photos" / name).write_bytes(data)
    trigger = engine.fire("image-uploaded", feed(
        minio_event("a.jpg", bucket="photos"),
        minio_event("copy+of+a.jpg", bucket="photos"),
        minio_event("old.jpg", bucket="photos", name="s3:ObjectRemoved:Delete"),
        minio_event("thumbnail%2F1.jpg", bucket="thumbs"),
    ))
    assert trigger.success and trigger.kind == "trigger"
    (rule,) = trigger.components
    assert rule.name == "owdedup/dispatch" and rule.success
    result = rule.result
    assert result["objects"] == 2 and len(result["skipped"]) == 2
    assert [(i["key"], i["status"]) for i in result["invoked"]] == [
        ("a.jpg", "computed"), ("copy of a.jpg", "deduplicated")]
    assert trigger.result["topic"] == "uploads"  # the trigger's own parameters are merged


def test_a_bad_object_is_reported_and_the_rest_goes_on(engine: Engine, store_root: Path) -> None:
    (store_root / "photos" / "bad.jpg").write_bytes(not_an_image())
    (store_root / "photos" / "good.jpg").write_bytes(jpeg(80, 60))
    rule = engine.fire("image-uploaded", feed(
        minio_event("bad.jpg", bucket="photos"), minio_event("good.jpg", bucket="photos"),
        {"not": "an event"},
    )).components[0]
    assert rule.success
    bad, good = rule.result["invoked"]
    assert bad["success"] is False and bad["error_kind"] == "bad-input"
    assert bad["error"].startswith("bad.jpg: not an image")
    assert good["status"] == "computed"
    assert len(rule.result["unreadable"]) == 1
