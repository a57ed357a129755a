"""Identical work in flight runs once against the real services (issue 11, item 1): MinIO
holds the inputs and outputs, CouchDB (pouchdb-server) the records and the leases. The
activations here are threads and processes with their own connections, as containers are."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime import functions
from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.functions import FunctionRegistry
from owdedup.runtime.pipeline import lease_key
from tests.unit.test_inflight_pipeline import (
    FAIL,
    GATE,
    LOG,
    _killed_holder,
    finish,
    in_parallel,
    logged,
    looked_up,
)


@pytest.fixture
def settings(services_env: dict[str, str]) -> Settings:
    """The services' stores, in a CouchDB database of this test's own."""
    resolved = Settings.resolve({}, services_env)
    database = f"inflight-{uuid.uuid4().hex[:10]}"
    return Settings(resolved.store_url, f"{resolved.records_url.rstrip('/')}/{database}",
                    resolved.store_options, resolved.records_options)


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    registry = FunctionRegistry(
        {"thumbnail": "owdedup.runtime.functions.thumbnail:ThumbnailFunction"}, environ={})
    registry.register("counted", "tests.unit.test_inflight_pipeline:Counted")
    monkeypatch.setattr(functions, "registry", registry)
    monkeypatch.setenv(LOG, str(tmp_path / "computations.log"))
    monkeypatch.setenv(GATE, str(tmp_path / "gate"))
    monkeypatch.setenv(FAIL, str(tmp_path / "fail-once"))
    monkeypatch.delenv("__OW_DEADLINE", raising=False)
    return tmp_path / "computations.log"


def _put(settings: Settings, bucket: str, key: str, data: bytes) -> None:
    context = Context(settings)
    try:
        context.store.ensure_bucket(bucket)
        context.store.put(bucket, key, data)
    finally:
        context.close()


def test_eight_identical_inputs_on_minio_and_couchdb_compute_once(
    settings: Settings, services_env: dict[str, str], counted: Path,
) -> None:
    bucket, run = services_env["OWDEDUP_IN_BUCKET"], uuid.uuid4().hex[:8]
    for i in range(8):
        _put(settings, bucket, f"{run}/copy-{i}.txt", f"same content {run}".encode())
    past_lookup = threading.Barrier(8)

    def activation(i: int) -> dict[str, Any]:
        job, context = looked_up(settings, f"{run}/copy-{i}.txt", bucket,
                                 services_env["OWDEDUP_OUT_BUCKET"])
        past_lookup.wait()
        return finish(job, context)

    results = in_parallel(8, activation)
    assert logged(counted) == ["start", "done"]
    assert sorted(r["status"] for r in results) == ["computed"] + ["deduplicated"] * 7
    assert len({r["outputs"][0]["key"] for r in results}) == 1
    context = Context(settings)
    try:
        (stats,) = context.records.stats()
        assert stats.records == 1
        fid = results[0]["outputs"][0]["function_id"]
        assert context.records.get_lease(fid, results[0]["digest"]) is None
    finally:
        context.close()


def test_a_killed_holder_is_taken_over_on_couchdb(
    settings: Settings, services_env: dict[str, str], counted: Path, tmp_path: Path,
) -> None:
    bucket, key = services_env["OWDEDUP_IN_BUCKET"], f"{uuid.uuid4().hex[:8]}/a.txt"
    dest = services_env["OWDEDUP_OUT_BUCKET"]
    _put(settings, bucket, key, f"killed midway {key}".encode())
    gate = tmp_path / "gate"
    gate.touch()
    ctx = multiprocessing.get_context("spawn")
    holder = ctx.Process(target=_killed_holder,
                         args=(settings, key, int((time.time() + 3) * 1000), bucket, dest))
    holder.start()
    try:
        job, context = looked_up(settings, key, bucket=bucket, dest=dest)
        stop = time.monotonic() + 60
        while logged(counted) != ["start"] and time.monotonic() < stop:
            time.sleep(0.05)
        lease = context.records.get_lease(lease_key(job), job.digest or "")
        assert lease is not None and lease.owner == "holder-to-be-killed"
        holder.kill()
        holder.join(timeout=30)
        gate.unlink()
        result = finish(job, context)
    finally:
        holder.kill()
    assert result["status"] == "computed" and result["took_over"]
    assert logged(counted) == ["start", "start", "done"]
    fid = result["outputs"][0]["function_id"]
    check = Context(settings)
    try:
        assert check.records.get_lease(fid, result["digest"]) is None
        assert check.records.get(fid, result["digest"]) is not None
    finally:
        check.close()
