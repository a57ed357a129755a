"""Identical work in flight runs once through the pipeline's steps (issue 11, item 1):
activations of the same new content, each with its own connections (as separate containers
have), past their lookups at once: one computes, the others come back with its result. A
holder that is killed is taken over after its lease expires; one that fails lets a waiter
compute. The function here counts its computations in a file, so processes count too."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime import functions
from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.errors import BadInputError, StoreError
from owdedup.runtime.functions import FunctionRegistry, Produced, Variant, identity_of
from owdedup.runtime.job import Job
from owdedup.runtime.pipeline import compute_step, hash_step, lease_key, lookup_step, record_step
from owdedup.runtime.records import Lease
from owdedup.runtime.records.sqlite import SqliteRecordStore

LOG, GATE, FAIL = "INFLIGHT_TEST_LOG", "INFLIGHT_TEST_GATE", "INFLIGHT_TEST_FAIL_ONCE"


@dataclass(frozen=True)
class _NoParams:
    def to_dict(self) -> dict[str, Any]:
        return {}


class Counted:
    """Upper-cases text; logs every start and end of a computation to $INFLIGHT_TEST_LOG,
    holds while $INFLIGHT_TEST_GATE exists, fails once as a store would if
    $INFLIGHT_TEST_FAIL_ONCE exists (removing it), refuses input starting 'bad'."""

    name = "counted"
    code_module = __name__
    libraries: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()

    def normalise(self, params: Mapping[str, Any]) -> _NoParams:
        return _NoParams()

    def variants(self, params: _NoParams) -> list[Variant]:
        return [Variant("text", 0, identity_of(self, {}), ".txt")]

    def check_input(self, read_prefix: Callable[[int], bytes], size: int, params: _NoParams,
                    *, name: str) -> None:
        pass

    def compute(self, data: bytes, params: _NoParams, *, name: str) -> dict[str, Produced]:
        _log(f"start {os.getpid()}")
        while Path(os.environ.get(GATE, "/nonexistent/gate")).exists():
            time.sleep(0.02)
        fail_once = Path(os.environ.get(FAIL, "/nonexistent/fail"))
        if fail_once.exists():
            fail_once.unlink()
            _log("failed")
            raise StoreError("the output store went away", key=name)
        if data.startswith(b"bad"):
            raise BadInputError("not text", key=name)
        _log("done")
        return {"text": Produced(data.upper(), "text/plain")}


def _log(line: str) -> None:
    with Path(os.environ[LOG]).open("a") as out:
        out.write(line + "\n")


def logged(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(autouse=True)
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``counted`` registered (in a registry of this test's) and its log's path."""
    with_counted = FunctionRegistry(
        {"thumbnail": "owdedup.runtime.functions.thumbnail:ThumbnailFunction"}, environ={})
    with_counted.register("counted", f"{__name__}:Counted")
    monkeypatch.setattr(functions, "registry", with_counted)
    log = tmp_path / "computations.log"
    monkeypatch.setenv(LOG, str(log))
    monkeypatch.setenv(GATE, str(tmp_path / "gate"))
    monkeypatch.setenv(FAIL, str(tmp_path / "fail-once"))
    monkeypatch.delenv("__OW_DEADLINE", raising=False)
    monkeypatch.delenv("__OW_ACTIVATION_ID", raising=False)
    return log


@pytest.fixture
def upload(store_root: Path) -> Callable[[str, bytes], None]:
    def put(key: str, data: bytes) -> None:
        (store_root / "photos" / key).write_bytes(data)
    return put


def looked_up(settings: Settings, key: str, bucket: str = "photos",
              dest: str = "thumbs") -> tuple[Job, Context]:
    """An activation's job after hash and lookup, with connections of its own."""
    context = Context(settings)
    job = Job(bucket, key, dest_bucket=dest, function="counted")
    return lookup_step(hash_step(job, context), context), context


def finish(job: Job, context: Context) -> dict[str, Any]:
    try:
        return record_step(compute_step(job, context), context).to_result()
    finally:
        context.close()


def in_parallel(count: int, work: Callable[[int], dict[str, Any]],
                before: threading.Barrier | None = None) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            outcome = work(index)
        except BaseException as exc:  # reported below, with the test's assertions
            with lock:
                errors.append(exc)
            raise
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def test_eight_identical_inputs_at_once_compute_once(
    settings: Settings, upload: Callable[[str, bytes], None], counted: Path, store_root: Path,
) -> None:
    for i in range(8):  # eight uploads of the same new content under eight names
        upload(f"copy-{i}.txt", b"same new content")
    past_lookup = threading.Barrier(8)

    def activation(i: int) -> dict[str, Any]:
        job, context = looked_up(settings, f"copy-{i}.txt")
        assert not job.all_hit  # every one of them missed
        past_lookup.wait()
        return finish(job, context)

    results = in_parallel(8, activation)
    assert logged(counted) == ["start", "done"]  # one computation
    assert sorted(r["status"] for r in results) == ["computed"] + ["deduplicated"] * 7
    waiters = [r for r in results if r["status"] == "deduplicated"]
    assert all(r["coalesced"] and r["outputs"][0]["hit"] for r in waiters)
    keys = {r["outputs"][0]["key"] for r in results}
    assert len(keys) == 1  # every one ends with the one result
    assert (store_root / "thumbs" / keys.pop()).read_bytes() == b"SAME NEW CONTENT"
    records = SqliteRecordStore(Path(settings.records_url.removeprefix("sqlite://")))
    (stats,) = records.stats()
    assert stats.records == 1 and stats.coalesced == 7 and stats.misses == 8
    digest = results[0]["digest"]
    assert records.get_lease(results[0]["outputs"][0]["function_id"], digest) is None


def _killed_holder(settings: Settings, key: str, deadline_ms: int, bucket: str = "photos",
                   dest: str = "thumbs") -> None:
    """An activation that times out: its platform deadline is near, its computation holds."""
    os.environ["__OW_DEADLINE"] = str(deadline_ms)
    os.environ["__OW_ACTIVATION_ID"] = "holder-to-be-killed"
    functions.registry.register("counted", f"{__name__}:Counted")  # in this process only
    job, context = looked_up(settings, key, bucket, dest)
    compute_step(job, context)


def test_a_killed_holder_is_taken_over_after_its_lease_expires(
    settings: Settings, upload: Callable[[str, bytes], None], counted: Path, tmp_path: Path,
) -> None:
    upload("a.txt", b"killed midway")
    gate = tmp_path / "gate"
    gate.touch()  # the holder's computation holds until it is killed
    ctx = multiprocessing.get_context("spawn")
    holder = ctx.Process(target=_killed_holder,
                         args=(settings, "a.txt", int((time.time() + 3) * 1000)))
    holder.start()
    try:
        job, context = looked_up(settings, "a.txt")
        fid = lease_key(job)
        records = context.records
        stop = time.monotonic() + 60
        while logged(counted) != ["start"] and time.monotonic() < stop:
            time.sleep(0.05)
        lease = records.get_lease(fid, job.digest or "")
        assert lease is not None and lease.owner == "holder-to-be-killed"
        holder.kill()  # as the platform kills an activation at its deadline
        holder.join(timeout=30)
        gate.unlink()
        result = finish(job, context)  # this waiter waits for the lease's expiry
    finally:
        holder.kill()
    assert result["status"] == "computed" and result["took_over"]
    assert logged(counted) == ["start", "start", "done"]
    assert records.get_lease(fid, result["digest"]) is None  # nothing left in progress
    assert records.get(fid, result["digest"]) is not None
    assert [s.took_over for s in records.stats()] == [1]


def test_a_failing_holder_lets_a_waiter_compute(
    settings: Settings, upload: Callable[[str, bytes], None], counted: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upload("t.txt", b"fails once, then fine")
    gate = tmp_path / "gate"
    gate.touch()
    (tmp_path / "fail-once").touch()  # the holder's computation fails, as a store outage would
    holder_job, holder_context = looked_up(settings, "t.txt")
    waiter_job, waiter_context = looked_up(settings, "t.txt")
    waiting = threading.Event()
    waiter_records = waiter_context.records
    polled = waiter_records.get_lease

    def spy(function_id: str, digest: str) -> Lease | None:
        waiting.set()  # the waiter has found the lease held and is polling it
        return polled(function_id, digest)

    monkeypatch.setattr(waiter_records, "get_lease", spy)

    def holder() -> dict[str, Any]:
        with pytest.raises(StoreError, match="went away"):
            compute_step(holder_job, holder_context)
        holder_context.close()
        return {}

    holder_thread = threading.Thread(target=holder)
    holder_thread.start()
    stop = time.monotonic() + 60
    while logged(counted) != ["start"] and time.monotonic() < stop:
        time.sleep(0.02)
    # the holder is computing; the waiter starts, finds the lease, polls
    waiter_result: list[dict[str, Any]] = []
    waiter_thread = threading.Thread(
        target=lambda: waiter_result.append(finish(waiter_job, waiter_context)))
    waiter_thread.start()
    assert waiting.wait(60)
    gate.unlink()  # now the holder fails, and lets go
    holder_thread.join(timeout=60)
    waiter_thread.join(timeout=60)
    (result,) = waiter_result
    assert logged(counted) == ["start", "failed", "start", "done"]
    assert result["status"] == "computed" and not result.get("took_over")  # released
    records = SqliteRecordStore(Path(settings.records_url.removeprefix("sqlite://")))
    fid = result["outputs"][0]["function_id"]
    assert records.get_lease(fid, result["digest"]) is None
    stored = records.get(fid, result["digest"])
    assert stored is not None and stored.output.key == result["outputs"][0]["key"]


def test_waiters_of_a_holder_that_refuses_the_input_get_its_refusal(
    settings: Settings, upload: Callable[[str, bytes], None], counted: Path,
) -> None:
    for i in range(8):
        upload(f"bad-{i}.txt", b"bad, and the same in all eight")
    past_lookup = threading.Barrier(8)

    def activation(i: int) -> dict[str, Any]:
        job, context = looked_up(settings, f"bad-{i}.txt")
        past_lookup.wait()
        try:
            finish(job, context)
        except BadInputError as exc:
            return {"error": str(exc), "key": exc.key}
        return {}

    results = in_parallel(8, activation)
    assert logged(counted) == ["start"]  # judged once
    assert sorted(r["key"] for r in results) == [f"bad-{i}.txt" for i in range(8)]
    assert all(r["error"] == f"{r['key']}: not text" for r in results)
