"""``@dedup`` on a Python action's main: keying, records and metadata inside the action, and
a record store that fails costs only a recomputation (issue 10, item 6)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.context import ContextCache
from owdedup.runtime.records import open_records
from owdedup.runtime.wrapped import decorator
from owdedup.runtime.wrapped import results as results_module
from owdedup.runtime.wrapped.decorator import dedup

SECRET = "couch-Password-never-kept"


@pytest.fixture
def contexts() -> Iterator[ContextCache]:
    cache = ContextCache()
    yield cache
    cache.close()


@pytest.fixture
def where(store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("__OW_ACTIVATION_ID", raising=False)  # outside OpenWhisk: no id
    (store_root / "photos" / "a.jpg").write_bytes(b"same")
    (store_root / "photos" / "b.jpg").write_bytes(b"same")
    (store_root / "photos" / "c.jpg").write_bytes(b"different")
    return {"owdedup_store": f"file://{store_root}",
            "owdedup_records": f"sqlite://{tmp_path / 'records.sqlite'}",
            "owdedup_records_password": SECRET}


def make_action(contexts: ContextCache, **options: Any) -> tuple[Any, list[dict[str, Any]]]:
    runs: list[dict[str, Any]] = []

    @dedup(objects=["bucket/key"], ignore=["dest_bucket"], function="measure",
           contexts=contexts, **options)
    def main(params: dict[str, Any]) -> dict[str, Any]:
        runs.append(params)
        if params.get("fail"):
            return {"error": "cannot measure"}
        return {"size": len(params["key"]), "scale": params.get("scale", 1)}

    return main, runs


def test_same_bytes_under_another_name_are_a_hit(
    where: dict[str, str], contexts: ContextCache, tmp_path: Path
) -> None:
    main, runs = make_action(contexts)
    first = main({**where, "bucket": "photos", "key": "a.jpg", "dest_bucket": "x"})
    assert first["size"] == 5 and first["owdedup"]["hit"] is False
    assert runs == [{"bucket": "photos", "key": "a.jpg", "dest_bucket": "x"}]  # no owdedup_*
    second = main({**where, "bucket": "photos", "key": "b.jpg", "dest_bucket": "y"})
    assert second == {"size": 5, "scale": 1, "owdedup": {
        "hit": True, "activation": "", "saved_ms": first["owdedup"]["compute_ms"]}}
    main({**where, "bucket": "photos", "key": "c.jpg"})
    main({**where, "bucket": "photos", "key": "a.jpg", "scale": 2})
    assert len(runs) == 3
    contexts.close()
    kept = (tmp_path / "records.sqlite").read_bytes().decode("latin-1")
    assert SECRET not in kept


def test_errors_are_not_recorded_and_metadata_can_be_left_out(
    where: dict[str, str], contexts: ContextCache
) -> None:
    main, runs = make_action(contexts, metadata=False)
    job = {**where, "bucket": "photos", "key": "a.jpg"}
    assert main({**job, "fail": True}) == {"error": "cannot measure"}
    assert main({**job, "fail": True}) == {"error": "cannot measure"}
    assert len(runs) == 2
    assert main(job) == {"size": 5, "scale": 1}
    assert main(job) == {"size": 5, "scale": 1}
    assert len(runs) == 3


def test_a_failing_record_store_costs_only_a_recomputation(
    where: dict[str, str], contexts: ContextCache, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the records' folder should be")
    broken = {**where, "owdedup_records": f"sqlite://{blocker / 'records.sqlite'}"}
    main, runs = make_action(contexts)
    job = {**broken, "bucket": "photos", "key": "a.jpg"}
    assert main(job)["size"] == 5 and main(job)["size"] == 5
    assert len(runs) == 2
    assert "record store unavailable" in caplog.text
    unreachable = {**where, "owdedup_records": "http://127.0.0.1:9/owdedup"}
    del unreachable["owdedup_records_password"]
    assert main({**unreachable, "bucket": "photos", "key": "a.jpg"})["size"] == 5
    misconfigured = {**where, "owdedup_records": "http://127.0.0.1:9/owdedup"}  # no user
    assert main({**misconfigured, "bucket": "photos", "key": "a.jpg"})["size"] == 5
    assert len(runs) == 4


def test_bad_input_is_refused_by_name(where: dict[str, str], contexts: ContextCache) -> None:
    main, runs = make_action(contexts)
    missing = main({**where, "bucket": "photos", "key": "gone.jpg"})
    assert "measure" in missing["error"] and "photos/gone.jpg" in missing["error"]
    odd = main({**where, "bucket": "photos", "key": "a.jpg", "when": {1, 2}})
    assert "'when'" in odd["error"] and "not JSON" in odd["error"]
    assert runs == []


def test_the_module_source_is_the_identity(
    where: dict[str, str], tmp_path: Path, contexts: ContextCache
) -> None:
    """Editing the decorated module's file makes the next call a miss."""
    module = tmp_path / "myaction.py"
    code = ("from owdedup.runtime.wrapped.decorator import dedup\n"
            "RUNS = []\n"
            "@dedup(objects=[], function='pure')\n"
            "def main(params):\n    RUNS.append(1)\n    return {'double': params['n'] * 2}\n")
    results = []
    for version in (code, code, code + "# edited\n"):
        module.write_text(version)
        namespace: dict[str, Any] = {"__name__": "myaction", "__file__": str(module)}
        exec(compile(version, str(module), "exec"), namespace)  # a fresh import of the file
        results.append((namespace["main"]({**where, "n": 21}), len(namespace["RUNS"])))
    assert [(r["double"], r["owdedup"]["hit"], runs) for r, runs in results] == [
        (42, False, 1), (42, True, 0), (42, False, 1)]


def test_a_result_that_is_not_json_is_returned_unrecorded(
    where: dict[str, str], contexts: ContextCache, caplog: pytest.LogCaptureFixture,
) -> None:
    @dedup(objects=[], function="odd", contexts=contexts)
    def main(params: dict[str, Any]) -> dict[str, Any]:
        return {"when": {1}}

    result = main(dict(where))
    assert "not JSON" in result["error"] and "odd" in result["error"]
    stats = open_records(where["owdedup_records"]).stats()
    assert [s.records for s in stats if s.function == "odd"] in ([], [0])


def test_identical_calls_in_flight_run_once(
    where: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight calls of the same content, each in its own container (its own connections),
    all past their lookups before any result is recorded: one runs, seven wait for it."""
    runs: list[str] = []
    past_lookup = threading.Barrier(8)
    looked_up = results_module.find_result  # what the decorator looks up with

    def lookup_then_meet(*args: Any) -> Any:
        found = looked_up(*args)
        past_lookup.wait(timeout=60)
        return found

    monkeypatch.setattr(decorator, "find_result", lookup_then_meet)
    caches = [ContextCache() for _ in range(8)]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def call(index: int) -> None:
        @dedup(objects=["bucket/key"], function="measure", contexts=caches[index])
        def main(params: dict[str, Any]) -> dict[str, Any]:
            with lock:
                runs.append(params["key"])
            return {"size": len(params["key"])}

        result = main({**where, "bucket": "photos", "key": "a.jpg" if index % 2 else "b.jpg"})
        with lock:
            results.append(result)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for cache in caches:
        cache.close()
    assert len(runs) == 1 and len(results) == 8
    assert {result["size"] for result in results} == {5}
    metas = sorted((r["owdedup"]["hit"], r["owdedup"].get("coalesced", False)) for r in results)
    assert metas == [(False, False)] + [(True, True)] * 7
    records = open_records(where["owdedup_records"])
    assert [(s.records, s.coalesced, s.hits) for s in records.stats()] == [(1, 7, 7)]
