"""``owdedup watch`` on the one feed loop, with a fake consumer (the real broker: see
tests/services/test_pipeline_e2e.py): upload events become thumbnails and records, every
object is reported, the offsets are committed to the end and the consumer is closed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from owdedup.runtime.context import Context
from owdedup.watch import ObjectOutcome, WatchConfig, run_watch
from tests.conftest import PROJECT
from tests.fake_kafka import FakeBroker
from tests.imagegen import jpeg, not_an_image
from tests.unit.test_events import minio_event


def test_watch_processes_every_upload_commits_and_drains(
    store_root: Path, context: Context, env: dict[str, str]
) -> None:
    broker = FakeBroker()
    names = ["a.jpg", "b.jpg", "notes.jpg"]
    for size, name in zip((100, 101), names, strict=False):
        (store_root / "photos" / name).write_bytes(jpeg(size, 80))
    (store_root / "photos" / "notes.jpg").write_bytes(not_an_image())
    for name in names:
        event = minio_event(name, bucket="photos")
        broker.produce(json.dumps(event).encode(), key=f"photos/{name}".encode())
    stop = threading.Event()
    seen: list[ObjectOutcome] = []

    def report(outcome: ObjectOutcome) -> None:
        seen.append(outcome)
        if len(seen) == len(names):
            stop.set()

    config = WatchConfig("fake:9092", broker.topic, group="watch-test", workers=1,
                         retry_for=0, manifest=PROJECT / "manifest.yaml", env=env)
    processed = run_watch(config, stop, report, consumer_factory=broker.factory)

    assert processed == 3
    by_key = {o.key: o for o in seen}
    assert by_key["photos/a.jpg"].ok and by_key["photos/a.jpg"].detail == "computed"
    assert by_key["photos/b.jpg"].ok
    bad = by_key["photos/notes.jpg"]
    assert not bad.ok and not bad.retryable and "notes.jpg" in bad.detail
    assert broker.committed("watch-test") == 3 and broker.closed == 1
    assert len(list((store_root / "thumbs").rglob("*.jpg"))) == 2
