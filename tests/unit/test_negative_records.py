"""Deterministic refusals are remembered (issue 11, item 2): a bad input (not an image,
truncated, over the limits) is recorded under its keys, so a re-run answers the same error
without reading the object; other limits or a new function version judge it again; a
transient failure (a store that fails, a lack of memory) is never recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime import functions
from owdedup.runtime.action import run_step
from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context, ContextCache
from owdedup.runtime.errors import BadInputError, StoreError
from owdedup.runtime.functions import FunctionRegistry
from owdedup.runtime.job import Job
from owdedup.runtime.pipeline import compute_step, hash_step, lookup_step, record_step
from owdedup.runtime.records.sqlite import SqliteRecordStore
from tests import imagegen
from tests.unit.test_inflight_pipeline import Counted, logged

BUILTINS = {"thumbnail": "owdedup.runtime.functions.thumbnail:ThumbnailFunction"}


class CountedNextVersion(Counted):
    """``counted`` after a change of its code: another code module, so another identity."""

    code_module = "tests.imagegen"


def reads_of(context: Context) -> list[str]:
    """Every read of an object's bytes through *context*'s store, from now on."""
    seen: list[str] = []
    store = context.store
    for method in ("open", "read_bytes", "read_prefix"):
        original = getattr(store, method)

        def counting(*args: Any, _original: Callable[..., Any] = original,
                     _name: str = method, **kwargs: Any) -> Any:
            seen.append(_name)
            return _original(*args, **kwargs)

        setattr(store, method, counting)
    return seen


def thumbnail_job(key: str, **params: Any) -> Job:
    return Job("photos", key, dest_bucket="thumbs", params={"sizes": [64, 32], **params})


def run(context: Context, job: Job) -> Job:
    for step in (hash_step, lookup_step, compute_step, record_step):
        job = step(job, context)
    return job


def records_of(settings: Settings) -> SqliteRecordStore:
    return SqliteRecordStore(Path(settings.records_url.removeprefix("sqlite://")))


@pytest.mark.parametrize(("content", "cause"), [
    (imagegen.not_an_image(), "not an image"),
    (imagegen.truncated(imagegen.jpeg(400, 300)), "truncated"),
    (imagegen.png_broken_stream(imagegen.png(200, 100)), "corrupt"),
])
def test_a_bad_input_is_answered_again_without_reading_it(
    settings: Settings, store_root: Path, content: bytes, cause: str,
) -> None:
    (store_root / "photos" / "bad.jpg").write_bytes(content)
    (store_root / "photos" / "same-bad.jpg").write_bytes(content)
    first_context = Context(settings)
    with pytest.raises(BadInputError, match=cause) as first:
        run(first_context, thumbnail_job("bad.jpg"))
    first_context.close()
    records = records_of(settings)
    (stats,) = records.stats()
    assert (stats.records, stats.failures) == (0, 2)  # one per size, no output recorded
    # a re-run, under another name: hashed (the digest is known), then answered
    context = Context(settings)
    job = hash_step(thumbnail_job("same-bad.jpg"), context)
    reads = reads_of(context)
    with pytest.raises(BadInputError) as again:
        compute_step(lookup_step(job, context), context)
    context.close()
    assert reads == []  # the object was not read again
    (stats,) = records.stats()
    assert (stats.failures, stats.refused) == (2, 1)
    assert str(again.value) == str(first.value).replace("bad.jpg", "same-bad.jpg", 1)
    assert again.value.key == "same-bad.jpg"
    assert list((store_root / "thumbs").rglob("*.*")) == []


def test_the_action_says_the_refusal_was_recorded(
    settings: Settings, store_root: Path,
) -> None:
    (store_root / "photos" / "bad.jpg").write_bytes(imagegen.not_an_image())
    params = {"bucket": "photos", "key": "bad.jpg", "dest_bucket": "thumbs",
              "store": settings.store_url, "records": settings.records_url}
    contexts = ContextCache()
    try:
        hashed = {**params, **run_step(hash_step, params, contexts)}  # as bound parameters
        looked_up = {**params, **run_step(lookup_step, hashed, contexts)}
        first = run_step(compute_step, looked_up, contexts)
        assert first["error_kind"] == "bad-input" and "recorded_failure" not in first
        again = run_step(lookup_step, hashed, contexts)
    finally:
        contexts.close()
    assert again["error"] == first["error"] and again["error_kind"] == "bad-input"
    assert again["recorded_failure"] is True


def test_other_limits_judge_the_input_again(settings: Settings, store_root: Path) -> None:
    """The limits are no part of the identity (they do not change an output), so a refusal
    over one limit must not answer a run with another."""
    (store_root / "photos" / "big.jpg").write_bytes(imagegen.jpeg(400, 300))
    context = Context(settings)
    try:
        with pytest.raises(BadInputError, match="over"):
            run(context, thumbnail_job("big.jpg", max_pixels=1000))
        done = run(context, thumbnail_job("big.jpg", max_pixels=10_000_000))
        assert done.status == "computed"
        again = run(context, thumbnail_job("big.jpg"))
        assert again.status == "deduplicated"  # the output record replaced the refusal
    finally:
        context.close()
    (stats,) = records_of(settings).stats()
    assert (stats.records, stats.failures) == (2, 0)


@pytest.fixture
def counted_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FunctionRegistry:
    registry = FunctionRegistry(BUILTINS, environ={})
    registry.register("counted", f"{Counted.__module__}:Counted")
    monkeypatch.setattr(functions, "registry", registry)
    monkeypatch.setenv("INFLIGHT_TEST_LOG", str(tmp_path / "computations.log"))
    monkeypatch.setenv("INFLIGHT_TEST_FAIL_ONCE", str(tmp_path / "fail-once"))
    monkeypatch.delenv("__OW_DEADLINE", raising=False)
    return registry


def counted_job(key: str) -> Job:
    return Job("photos", key, dest_bucket="thumbs", function="counted")


def test_a_new_function_version_judges_the_input_again(
    settings: Settings, store_root: Path, tmp_path: Path, counted_registry: FunctionRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (store_root / "photos" / "b.txt").write_bytes(b"bad text")
    context = Context(settings)
    try:
        for _ in range(2):
            with pytest.raises(BadInputError, match="not text"):
                run(context, counted_job("b.txt"))
        assert logged(tmp_path / "computations.log") == ["start"]  # judged once
        upgraded = FunctionRegistry(BUILTINS, environ={})
        upgraded.register("counted", f"{__name__}:CountedNextVersion")
        monkeypatch.setattr(functions, "registry", upgraded)
        with pytest.raises(BadInputError, match="not text"):
            run(context, counted_job("b.txt"))
        assert logged(tmp_path / "computations.log") == ["start", "start"]  # judged again
    finally:
        context.close()
    (stats,) = records_of(settings).stats()
    assert stats.failures == 2  # one per version


def test_a_transient_failure_is_never_recorded(
    settings: Settings, store_root: Path, tmp_path: Path, counted_registry: FunctionRegistry,
) -> None:
    (store_root / "photos" / "t.txt").write_bytes(b"fine text")
    (tmp_path / "fail-once").touch()  # the first computation meets a store that fails
    context = Context(settings)
    try:
        with pytest.raises(StoreError, match="went away"):
            run(context, counted_job("t.txt"))
        assert records_of(settings).stats() == []  # nothing recorded, negative or not
        done = run(context, counted_job("t.txt"))
    finally:
        context.close()
    assert done.status == "computed"
    assert logged(tmp_path / "computations.log") == ["start", "failed", "start", "done"]


def test_a_lack_of_memory_is_never_recorded(
    settings: Settings, store_root: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (store_root / "photos" / "m.jpg").write_bytes(imagegen.jpeg(64, 48))
    spec = functions.get_function("thumbnail")

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(type(spec), "compute", out_of_memory)
    context = Context(settings)
    try:
        with pytest.raises(MemoryError):
            run(context, thumbnail_job("m.jpg"))
        assert records_of(settings).stats() == []
        monkeypatch.undo()
        assert run(context, thumbnail_job("m.jpg")).status == "computed"
    finally:
        context.close()
