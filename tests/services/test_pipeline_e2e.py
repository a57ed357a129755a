"""The whole system against the real services: MinIO -> Kafka -> watch -> sequence -> CouchDB.

Every upload here goes through MinIO and reaches the pipeline only as a MinIO event on Kafka,
consumed by ``owdedup watch`` (the local stand-in for OpenWhisk's feed and rule).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.errors import OwdedupError
from tests.deploying import thumbnail_output
from tests.imagegen import jpeg, not_an_image
from tests.service_fixtures import PROJECT, Services
from tests.tooling import wait_until

SIZES = [64]


class Watch:
    """``owdedup watch`` in a subprocess, its output lines collected as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "owdedup", "watch", "--workers", "2", "--retry-for", "600",
             "--group", f"test-{uuid.uuid4().hex[:8]}"],
            cwd=PROJECT, env={**os.environ, **env, "OWDEDUP_SIZES": "64"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, fragment: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if fragment in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"watch never printed {fragment!r}; output:\n" +
                             "\n".join(self.lines[-40:]))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C: drain and exit cleanly
        return self.proc.wait(timeout=120)


@pytest.fixture
def context(services_env: dict[str, str]) -> Iterator[Context]:
    ctx = Context(Settings.resolve({}, services_env))
    yield ctx
    ctx.close()


@pytest.fixture
def watch(services_env: dict[str, str]) -> Iterator[Watch]:
    running = Watch(services_env)
    yield running
    assert running.stop() == 0, "\n".join(running.lines[-40:])
    assert any("stopped after" in line for line in running.lines)


def expected_output(data: bytes) -> tuple[str, str]:
    """(function identity, output key) the pipeline must produce for *data* at 64 px."""
    return thumbnail_output(data, {"sizes": SIZES})


def upload(context: Context, watch: Watch, bucket: str, key: str, data: bytes,
           outcome: str) -> str:
    """Put *data* at bucket/key through MinIO and return watch's line on it: ``ok ...:
    computed``, ``ok ...: deduplicated`` or ``failed ...``, as *outcome* says."""
    context.store.put(bucket, key, data)
    if outcome == "failed":
        return watch.wait_for(f"failed {bucket}/{key}")
    return watch.wait_for(f"ok {bucket}/{key}: {outcome}")


def test_upload_computes_and_duplicates_reuse(
    services_env: dict[str, str], context: Context, watch: Watch
) -> None:
    inb, outb = services_env["OWDEDUP_IN_BUCKET"], services_env["OWDEDUP_OUT_BUCKET"]
    run = uuid.uuid4().hex[:8]
    data = jpeg(321, 203)
    upload(context, watch, inb, f"{run}/a.jpg", data, "computed")
    fid, out_key = expected_output(data)
    assert context.store.exists(outb, out_key)
    record = context.records.get(fid, hashlib.sha256(data).hexdigest())
    assert record is not None and record.output.key == out_key

    upload(context, watch, inb, f"{run}/b.jpg", data, "deduplicated")
    upload(context, watch, inb, f"{run}/c.jpg", jpeg(322, 204), "computed")


def test_eight_simultaneous_identical_uploads_give_one_output_and_one_record(
    services_env: dict[str, str], context: Context, watch: Watch
) -> None:
    inb, outb = services_env["OWDEDUP_IN_BUCKET"], services_env["OWDEDUP_OUT_BUCKET"]
    run = uuid.uuid4().hex[:8]
    data = jpeg(333, 222)
    fid, out_key = expected_output(data)
    digest = hashlib.sha256(data).hexdigest()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: context.store.put(inb, f"{run}/same-{i}.jpg", data), range(8)))
    for i in range(8):
        watch.wait_for(f"{inb}/{run}/same-{i}.jpg")
    outputs = [o.key for o in context.store.list(outb, f"thumbnail/64/{fid}/") if digest in o.key]
    assert outputs == [out_key]
    assert context.records.get(fid, digest) is not None
    statuses = [line for line in watch.lines if f"{run}/same-" in line]
    assert all(line.startswith("ok ") for line in statuses), statuses


def test_vanished_output_is_recomputed_on_the_next_hit(
    services_env: dict[str, str], context: Context, watch: Watch
) -> None:
    inb, outb = services_env["OWDEDUP_IN_BUCKET"], services_env["OWDEDUP_OUT_BUCKET"]
    run = uuid.uuid4().hex[:8]
    data = jpeg(300, 301)
    upload(context, watch, inb, f"{run}/first.jpg", data, "computed")
    _, out_key = expected_output(data)
    context.store.delete(outb, out_key)
    upload(context, watch, inb, f"{run}/again.jpg", data, "computed")
    assert context.store.exists(outb, out_key)


def test_bad_upload_is_reported_and_the_stream_goes_on(
    services_env: dict[str, str], context: Context, watch: Watch
) -> None:
    inb = services_env["OWDEDUP_IN_BUCKET"]
    run = uuid.uuid4().hex[:8]
    assert "not an image" in upload(context, watch, inb, f"{run}/notes.jpg", not_an_image(),
                                    "failed")
    assert "zero bytes" in upload(context, watch, inb, f"{run}/empty.jpg", b"", "failed")
    upload(context, watch, inb, f"{run}/fine.jpg", jpeg(210, 140), "computed")


def test_map_and_invoke_work_unchanged_against_minio_and_couchdb(
    services_env: dict[str, str], context: Context, tmp_path: Path
) -> None:
    inb, outb = services_env["OWDEDUP_IN_BUCKET"], services_env["OWDEDUP_OUT_BUCKET"]
    run = uuid.uuid4().hex[:8]
    for i in range(3):
        context.store.put(inb, f"map-{run}/p{i}.jpg", jpeg(150 + i, 100 + i))
    env = {**os.environ, **services_env}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "owdedup", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    for expected in ("computed", "deduplicated"):
        proc = cli("map", "thumbnail", f"{inb}/map-{run}/", outb, "--size", "64", "-q",
                   "--results", "r.jsonl")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
        assert [r["status"] for r in rows] == [expected] * 3
    proc = cli("invoke", "thumbnail", f"{inb}/map-{run}/p0.jpg", outb, "--size", "64")
    result = json.loads(proc.stdout)
    assert result["status"] == "deduplicated" and result["digest_source"] == "checksum"
    assert services_env["OWDEDUP_STORE_SECRET_KEY"] not in proc.stdout + proc.stderr


def test_restarting_each_service_loses_no_event_and_no_output(
    services: Services, services_env: dict[str, str], context: Context, watch: Watch
) -> None:
    inb, outb = services_env["OWDEDUP_IN_BUCKET"], services_env["OWDEDUP_OUT_BUCKET"]
    run = uuid.uuid4().hex[:8]
    uploads: dict[str, bytes] = {}
    done = threading.Event()

    def uploader() -> None:
        i = 0
        while not done.is_set() or i < 6:
            data = jpeg(160 + i, 120 + i)
            key = f"{run}/s{i:03d}.jpg"
            while True:  # the client retries while MinIO is down, as any uploader would
                try:
                    context.store.put(inb, key, data)
                    break
                except OwdedupError:
                    time.sleep(0.5)
            uploads[key] = data
            i += 1
            time.sleep(0.4)

    thread = threading.Thread(target=uploader)
    thread.start()
    try:
        for name in ("minio", "kafka", "couchdb"):
            time.sleep(3)
            services.stop(name)
            time.sleep(5)
            services.start(name)
        time.sleep(3)
    finally:
        done.set()
        thread.join(timeout=300)
    assert len(uploads) >= 6

    def missing() -> list[str]:
        gone = []
        for key, data in uploads.items():
            fid, out_key = expected_output(data)
            if not context.store.exists(outb, out_key) or context.records.get(
                    fid, hashlib.sha256(data).hexdigest()) is None:
                gone.append(key)
        return gone

    try:
        wait_until(lambda: not missing(), timeout=300, what="every upload's output and record",
                   ignore=(OwdedupError,))  # a service may be restarting
    except AssertionError:
        gone = missing()  # what watch said about them, and every failure it reported
        said = [line for line in watch.lines
                if not line.startswith("ok ") or any(key in line for key in gone)]
        raise AssertionError(f"not processed: {gone}\nwatch output:\n" + "\n".join(said)) \
            from None
    for key in uploads:  # and every event reached the pipeline
        watch.wait_for(f"{inb}/{key}:", timeout=60)
    # Nothing recorded without its output.
    for data in uploads.values():
        fid, _ = expected_output(data)
        record = context.records.get(fid, hashlib.sha256(data).hexdigest())
        assert record is not None and context.store.exists(record.output.bucket,
                                                           record.output.key)


def test_eight_simultaneous_identical_uploads_compute_once(
    services_env: dict[str, str], context: Context, watch: Watch
) -> None:
    """Issue 11: whatever batches the events arrive in, one activation computes; the others
    end with its result (in-run duplicates folded, or waiting for its lease)."""
    inb = services_env["OWDEDUP_IN_BUCKET"]
    run = uuid.uuid4().hex[:8]
    data = jpeg(334, 223)
    fid, out_key = expected_output(data)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: context.store.put(inb, f"{run}/once-{i}.jpg", data), range(8)))
    lines = [watch.wait_for(f"{inb}/{run}/once-{i}.jpg") for i in range(8)]
    assert sum(line.endswith(": computed") for line in lines) == 1, lines
    assert sum(line.endswith(": deduplicated") for line in lines) == 7, lines
    digest = hashlib.sha256(data).hexdigest()
    assert context.records.get_lease(fid, digest) is None
    record = context.records.get(fid, digest)
    assert record is not None and record.output.key == out_key
