"""Adversarial review of the conductor (issues 10 and 11): what an invoker can do with the
continuation state it can read back from its own activation records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.context import ContextCache
from owdedup.runtime.records import open_records
from owdedup.runtime.wrapped.conductor import conductor_main
from tests.unit.test_conductor import ENV, bound, job

__all__ = ["bound"]  # the fixture, shared


@pytest.fixture
def contexts() -> Iterator[ContextCache]:
    cache = ContextCache()
    yield cache
    cache.close()


def test_a_used_state_replayed_with_a_forged_result_plants_no_record(
    bound: dict[str, Any], contexts: ContextCache, tmp_path: Path
) -> None:
    """The first activation's result (the continuation, signed state included) is in the
    invoker's activation records. Once the composition has ended (here: the wrapped action
    failed, so nothing was recorded), invoking the conductor again with that state and a
    result of the invoker's choosing must not make it the recorded result of the call."""
    first = conductor_main({**bound, **job()}, ENV, contexts)
    state = first["state"]
    failed = {"error": "The action exceeded its time limits of 100 milliseconds."}
    conductor_main({**bound, **failed, **state}, {**ENV, "__OW_ACTIVATION_ID": "b" * 32},
                   contexts)
    forged = {"labels": ["forged"], "width": 666}
    conductor_main({**bound, **forged, **state}, {**ENV, "__OW_ACTIVATION_ID": "c" * 32},
                   contexts)
    records = open_records(f"sqlite://{tmp_path / 'records.sqlite'}")
    assert [s.records for s in records.stats() if s.function == "myfunction"] in ([], [0])
    again = conductor_main({**bound, **job()}, {**ENV, "__OW_ACTIVATION_ID": "d" * 32},
                           contexts)
    assert "action" in again, again  # still a miss: the wrapped action runs, not a forged hit


def test_an_object_replaced_by_a_bad_one_after_hashing_records_no_refusal_of_the_good_digest(
    settings: Any, store_root: Path,
) -> None:
    """The thumbnail's compute judges the input from a prefix it reads again from the store.
    If the object was overwritten with bytes it refuses after the hash step hashed a good
    image, the refusal is of the new bytes: recording it under the hashed (good) digest
    would answer every later upload of that good image with the error."""
    from owdedup.runtime import handover
    from owdedup.runtime.context import Context
    from owdedup.runtime.errors import OwdedupError
    from owdedup.runtime.pipeline import compute_step, hash_step, lookup_step
    from tests import imagegen
    from tests.unit.test_negative_records import records_of, thumbnail_job

    good = imagegen.jpeg(200, 100)
    (store_root / "photos" / "a.jpg").write_bytes(good)
    (store_root / "photos" / "copy.jpg").write_bytes(good)
    context = Context(settings)
    try:
        job = lookup_step(hash_step(thumbnail_job("a.jpg"), context), context)
        handover.clear()  # another activation computes: nothing read is in hand
        (store_root / "photos" / "a.jpg").write_bytes(imagegen.not_an_image())
        with pytest.raises(OwdedupError):
            compute_step(job, context)
    finally:
        context.close()
    assert [r for r in records_of(settings).records_of_digest(job.digest or "")
            if r.failure is not None] == []


def test_an_object_overwritten_while_the_wrapped_action_runs_is_not_recorded_as_the_old_content(
    bound: dict[str, Any], contexts: ContextCache, store_root: Path
) -> None:
    """The first activation hashes photos/a.jpg; the wrapped action reads it later. If it was
    overwritten in between (a new upload under the same name), the result is of the new
    bytes: recorded under the hashed digest, the old bytes would hit another content's
    result ever after."""
    first = conductor_main({**bound, **job()}, ENV, contexts)
    (store_root / "photos" / "a.jpg").write_bytes(b"a new upload, other bytes")
    of_new_bytes = {"labels": ["dog"], "width": 9}
    conductor_main({**bound, **of_new_bytes, **first["state"]},
                   {**ENV, "__OW_ACTIVATION_ID": "b" * 32}, contexts)
    # copy.jpg still holds the bytes that were hashed: a hit here would be the dog's result
    again = conductor_main({**bound, **job("copy.jpg")},
                           {**ENV, "__OW_ACTIVATION_ID": "c" * 32}, contexts)
    assert "action" in again, again


def test_the_decorator_does_not_record_a_result_of_an_object_overwritten_while_computing(
    store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from owdedup.runtime.wrapped.decorator import dedup

    monkeypatch.delenv("__OW_ACTIVATION_ID", raising=False)
    (store_root / "photos" / "a.jpg").write_bytes(b"same")
    (store_root / "photos" / "b.jpg").write_bytes(b"same")
    where = {"owdedup_store": f"file://{store_root}",
             "owdedup_records": f"sqlite://{tmp_path / 'records.sqlite'}"}
    cache = ContextCache()

    @dedup(objects=["bucket/key"], function="measure", contexts=cache)
    def main(params: dict[str, Any]) -> dict[str, Any]:
        # a new upload lands under the same name just before the function reads it
        (store_root / "photos" / "a.jpg").write_bytes(b"a new upload")
        return {"size": len((store_root / "photos" / params["key"]).read_bytes())}

    try:
        assert main({**where, "bucket": "photos", "key": "a.jpg"})["size"] == 12
        other = main({**where, "bucket": "photos", "key": "b.jpg"})
    finally:
        cache.close()
    assert other["owdedup"]["hit"] is False and other["size"] == 4


def test_a_pure_function_whose_result_names_an_existing_object_is_a_hit(
    bound: dict[str, Any], contexts: ContextCache, store_root: Path
) -> None:
    """With no declared object (``owdedup_objects: -``), a result naming an output it wrote
    (bucket/key) was never believed (no store to check it with): every call ran the action
    again and deleted the record it had just made."""
    (store_root / "out").mkdir(exist_ok=True)
    (store_root / "out" / "chart.svg").write_bytes(b"<svg/>")
    pure = {**bound, "owdedup_objects": "-"}
    runs: list[dict[str, Any]] = []

    def chart(params: dict[str, Any]) -> dict[str, Any]:
        runs.append(params)
        return {"bucket": "out", "key": "chart.svg"}

    from tests.unit.test_conductor import call

    call(pure, contexts, chart, n=3)
    again = call(pure, contexts, chart, n=3)
    assert len(runs) == 1 and again["owdedup"]["hit"] is True


def test_the_decorator_on_a_pure_function_whose_result_names_an_object_hits(
    store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from owdedup.runtime.wrapped.decorator import dedup

    monkeypatch.delenv("__OW_ACTIVATION_ID", raising=False)
    (store_root / "out").mkdir(exist_ok=True)
    (store_root / "out" / "chart.svg").write_bytes(b"<svg/>")
    where = {"owdedup_store": f"file://{store_root}",
             "owdedup_records": f"sqlite://{tmp_path / 'records.sqlite'}"}
    cache = ContextCache()
    runs: list[dict[str, Any]] = []

    @dedup(objects=[], function="chart", contexts=cache)
    def main(params: dict[str, Any]) -> dict[str, Any]:
        runs.append(params)
        return {"bucket": "out", "key": "chart.svg"}

    try:
        main({**where, "n": 3})
        again = main({**where, "n": 3})
    finally:
        cache.close()
    assert len(runs) == 1 and again["owdedup"]["hit"] is True


def test_an_error_result_naming_an_action_does_not_continue_the_composition(
    bound: dict[str, Any], contexts: ContextCache
) -> None:
    """The second activation returns the wrapped action's error result as its own output; a
    conductor's output with an ``action`` key is a continuation (OpenWhisk would run that
    action next), one with ``params`` ends with ``params`` as the result (the error lost: a
    success-shaped failure). An error that happens to carry such keys must stay the error."""
    from owdedup.engine.conductor import Continuation

    first = conductor_main({**bound, **job()}, ENV, contexts)
    failed = {"error": "cannot resize", "action": "resize", "params": {"width": 3},
              "state": "retry"}
    second = conductor_main({**bound, **failed, **first["state"]},
                            {**ENV, "__OW_ACTIVATION_ID": "b" * 32}, contexts)
    turn = Continuation.of(second)
    assert not turn.has_action and turn.params is None
    assert second["error"] == "cannot resize"


def test_a_first_activation_that_fails_after_claiming_leaves_no_lease(
    bound: dict[str, Any], contexts: ContextCache, tmp_path: Path
) -> None:
    """With a pinned version nothing reads the wrapped action before the key is claimed; a
    name that cannot be a continuation's then failed after the claim, and the lease stayed
    for the wrapped action's longest time limit: every identical call waited for it."""
    import sqlite3

    bad = {**bound, "owdedup_action": "a/b/c/d"}
    result = conductor_main({**bad, **job()}, ENV, contexts)
    assert "error" in result and "a/b/c/d" in result["error"]
    contexts.close()
    with sqlite3.connect(tmp_path / "records.sqlite") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        leases = db.execute("SELECT COUNT(*) FROM leases").fetchone() \
            if "leases" in tables else (0,)
    assert leases == (0,)


def test_an_object_store_that_fails_once_during_a_hit_check_does_not_delete_the_record(
    bound: dict[str, Any], contexts: ContextCache, store_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An output named by a recorded result that cannot be checked (the store answered 503)
    makes this call a miss; it has not vanished, so its record must stay for the next one."""
    from owdedup.runtime.errors import StoreError
    from owdedup.runtime.stores.folder import FolderStore
    from tests.unit.test_conductor import call

    (store_root / "out").mkdir(exist_ok=True)
    (store_root / "out" / "made.txt").write_text("output")
    runs: list[dict[str, Any]] = []

    def writes(params: dict[str, Any]) -> dict[str, Any]:
        runs.append(params)
        return {"output": {"bucket": "out", "key": "made.txt"}}

    call(bound, contexts, writes, **job())
    with monkeypatch.context() as patched:
        def unavailable(self: Any, bucket: str, key: str) -> bool:
            raise StoreError("503 Slow Down")

        patched.setattr(FolderStore, "exists", unavailable)
        first = conductor_main({**bound, **job()}, {**ENV, "__OW_ACTIVATION_ID": "e" * 32},
                               contexts)
        assert "action" in first  # not believed: a miss
        conductor_main({**bound, "error": "the caller gave up", **first["state"]},
                       {**ENV, "__OW_ACTIVATION_ID": "f" * 32}, contexts)
    assert call(bound, contexts, writes, **job())["owdedup"]["hit"] is True
    assert len(runs) == 1


def _load_action(folder: Path, generation: int) -> Any:
    """A two-module Python action (its zip's __main__.py and helper.py), loaded fresh as a
    new container would."""
    import importlib.util
    import sys

    names = {"helper": f"review_helper_{generation}", "main": f"review_main_{generation}"}
    helper_spec = importlib.util.spec_from_file_location(names["helper"], folder / "helper.py")
    assert helper_spec is not None and helper_spec.loader is not None
    helper = importlib.util.module_from_spec(helper_spec)
    helper_spec.loader.exec_module(helper)
    sys.modules["helper"] = helper
    spec = importlib.util.spec_from_file_location(names["main"], folder / "__main__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAIN_MODULE = '''
from owdedup.runtime.context import ContextCache
from owdedup.runtime.wrapped.decorator import dedup
import helper

CONTEXTS = ContextCache()

@dedup(objects=["bucket/key"], function="measure", contexts=CONTEXTS)
def main(params):
    return {"label": helper.label()}
'''


def test_the_decorator_misses_after_the_action_is_updated_with_a_new_helper_module(
    store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An action zip's __main__.py decorated with @dedup, its logic in helper.py: updating
    the action (``wsk action update``: a new __OW_ACTION_VERSION) with a changed helper.py
    gave the old helper's result as a hit, since only __main__.py's source was keyed."""
    import sys

    (store_root / "photos" / "a.jpg").write_bytes(b"same")
    code = tmp_path / "action"
    code.mkdir()
    (code / "__main__.py").write_text(MAIN_MODULE)
    (code / "helper.py").write_text("def label():\n    return 'v1'\n")
    where = {"owdedup_store": f"file://{store_root}",
             "owdedup_records": f"sqlite://{tmp_path / 'records.sqlite'}",
             "bucket": "photos", "key": "a.jpg"}
    monkeypatch.setenv("__OW_ACTION_NAME", "/guest/measure")
    monkeypatch.delenv("__OW_ACTIVATION_ID", raising=False)
    monkeypatch.setenv("__OW_ACTION_VERSION", "0.0.1")
    try:
        first = _load_action(code, 1)
        assert first.main(dict(where))["label"] == "v1"
        first.CONTEXTS.close()
        (code / "helper.py").write_text("def label():\n    return 'v2'\n")
        monkeypatch.setenv("__OW_ACTION_VERSION", "0.0.2")
        updated = _load_action(code, 2)
        assert updated.main(dict(where))["label"] == "v2"
        updated.CONTEXTS.close()
    finally:
        sys.modules.pop("helper", None)


def test_a_same_size_bad_replacement_is_refused_unrecorded_without_reading_it_whole(
    settings: Any, store_root: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same overwrite with bytes of the same size: a HEAD cannot tell it from the hashed
    content (no checksum kept for the new bytes), and hashing the whole object again would
    undo what judging from a prefix saves on a huge bad input. So the refusal is answered
    for the object as it is now, and not recorded under the hashed digest."""
    from owdedup.runtime import handover
    from owdedup.runtime.context import Context
    from owdedup.runtime.errors import BadInputError
    from owdedup.runtime.pipeline import compute_step, hash_step, lookup_step
    from owdedup.runtime.stores.base import ObjectStore
    from tests import imagegen
    from tests.unit.test_negative_records import records_of, thumbnail_job

    good = imagegen.jpeg(200, 100)
    bad = (imagegen.not_an_image() * (len(good) // 10 + 1))[:len(good)]
    (store_root / "photos" / "a.jpg").write_bytes(good)
    context = Context(settings)
    try:
        job = lookup_step(hash_step(thumbnail_job("a.jpg"), context), context)
        handover.clear()
        (store_root / "photos" / "a.jpg").write_bytes(bad)

        def no_streaming(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError("the whole object was read again to judge a refusal")

        monkeypatch.setattr(ObjectStore, "content_sha256", no_streaming)
        with pytest.raises(BadInputError, match=r"a\.jpg: not an image"):
            compute_step(job, context)
    finally:
        context.close()
    assert [r for r in records_of(settings).records_of_digest(job.digest or "")
            if r.failure is not None] == []
