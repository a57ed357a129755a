"""The conductor's two activations, called as OpenWhisk would (main(params)), on a folder store
and SQLite records: no OpenWhisk needed. The wrapped action is played by the test."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.context import ContextCache
from owdedup.runtime.records import Record, open_records
from owdedup.runtime.records.base import RESULT_LIMIT_BYTES
from owdedup.runtime.wrapped.conductor import conductor_main
from tests.conftest import PROJECT

SECRET = "s3cr3t-Passw0rd-never-shown"
API_KEY = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:" + "k" * 64


@pytest.fixture
def contexts() -> Iterator[ContextCache]:
    cache = ContextCache()
    yield cache
    cache.close()


@pytest.fixture
def bound(store_root: Path, tmp_path: Path) -> dict[str, Any]:
    (store_root / "photos" / "a.jpg").write_bytes(b"the same bytes")
    (store_root / "photos" / "copy.jpg").write_bytes(b"the same bytes")
    (store_root / "photos" / "other.jpg").write_bytes(b"other bytes")
    return {
        "owdedup_action": "myfunction", "owdedup_version": "1.0",
        "owdedup_ignore": "dest_bucket,api_token",
        "owdedup_store": f"file://{store_root}",
        "owdedup_records": f"sqlite://{tmp_path / 'records.sqlite'}",
        "owdedup_records_password": SECRET,
    }


ENV = {"__OW_NAMESPACE": "guest", "__OW_API_KEY": API_KEY, "__OW_ACTIVATION_ID": "a" * 32}


class Wrapped:
    """The wrapped action: counts its runs and returns a result naming its output."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        self.runs.append(params)
        return {"labels": ["cat"], "width": 3, "params": "a key OpenWhisk treats specially"}


def call(bound: dict[str, Any], contexts: ContextCache,
         wrapped: Callable[[dict[str, Any]], dict[str, Any]],
         **params: Any) -> dict[str, Any]:
    """Run the composition as OpenWhisk's conductor semantics do; returns its result."""
    first = conductor_main({**bound, **params}, ENV, contexts)
    if "error" in first:
        return first
    if "action" not in first:
        return first["params"]  # type: ignore[no-any-return]
    assert first["action"] == "/guest/myfunction"
    assert not any(k.startswith("owdedup_") for k in first["params"])
    component = wrapped(first["params"])
    second = conductor_main({**bound, **component, **first["state"]},
                            {**ENV, "__OW_ACTIVATION_ID": "b" * 32}, contexts)
    assert "action" not in second
    return second.get("params", second)  # type: ignore[no-any-return]


def job(key: str = "a.jpg", **extra: Any) -> dict[str, Any]:
    return {"bucket": "photos", "key": key, "dest_bucket": "out", "threshold": 3, **extra}


def test_miss_runs_the_action_then_the_same_bytes_under_another_name_hit(
    bound: dict[str, Any], contexts: ContextCache
) -> None:
    wrapped = Wrapped()
    first = call(bound, contexts, wrapped, **job())
    assert first["labels"] == ["cat"] and first["params"] == "a key OpenWhisk treats specially"
    assert first["owdedup"]["hit"] is False and first["owdedup"]["activation"] == "b" * 32
    assert wrapped.runs == [job()]  # exactly the call's parameters, no owdedup_* one
    again = call(bound, contexts, wrapped, **job("copy.jpg"))
    assert len(wrapped.runs) == 1  # a hit never starts the wrapped action
    assert again["owdedup"] == {"hit": True, "activation": "b" * 32,
                                "saved_ms": first["owdedup"]["compute_ms"]}
    assert {k: v for k, v in again.items() if k != "owdedup"} == \
        {k: v for k, v in first.items() if k != "owdedup"}


def test_other_content_or_an_output_parameter_is_a_miss_an_ignored_one_a_hit(
    bound: dict[str, Any], contexts: ContextCache
) -> None:
    wrapped = Wrapped()
    call(bound, contexts, wrapped, **job())
    call(bound, contexts, wrapped, **job("other.jpg"))
    assert len(wrapped.runs) == 2
    call(bound, contexts, wrapped, **job(threshold=4))
    assert len(wrapped.runs) == 3
    result = call(bound, contexts, wrapped, **job(dest_bucket="elsewhere", api_token="x"))
    assert len(wrapped.runs) == 3 and result["owdedup"]["hit"] is True


def test_a_new_version_is_a_miss(bound: dict[str, Any], contexts: ContextCache) -> None:
    wrapped = Wrapped()
    call(bound, contexts, wrapped, **job())
    call({**bound, "owdedup_version": "2.0"}, contexts, wrapped, **job())
    assert len(wrapped.runs) == 2


def test_no_metadata_leaves_the_key_out(bound: dict[str, Any], contexts: ContextCache) -> None:
    wrapped = Wrapped()
    quiet = {**bound, "owdedup_no_metadata": "true"}
    assert "owdedup" not in call(quiet, contexts, wrapped, **job())
    assert "owdedup" not in call(quiet, contexts, wrapped, **job())
    assert len(wrapped.runs) == 1


def test_an_error_result_is_returned_and_not_recorded(
    bound: dict[str, Any], contexts: ContextCache, tmp_path: Path
) -> None:
    first = conductor_main({**bound, **job()}, ENV, contexts)
    failed = {"error": "The action exceeded its time limits of 100 milliseconds."}
    second = conductor_main({**bound, **failed, **first["state"]}, ENV, contexts)
    assert second["error"] == failed["error"] and "params" not in second
    assert second["owdedup"]["action"] == "myfunction"
    assert second["owdedup"]["objects"] == ["photos/a.jpg"]
    records = open_records(f"sqlite://{tmp_path / 'records.sqlite'}")
    assert [s.records for s in records.stats() if s.function == "myfunction"] in ([], [0])
    assert "action" in conductor_main({**bound, **job()}, ENV, contexts)  # still a miss


def test_a_forged_state_is_refused_and_records_nothing(
    bound: dict[str, Any], contexts: ContextCache, tmp_path: Path
) -> None:
    first = conductor_main({**bound, **job()}, ENV, contexts)
    state = dict(first["state"]["owdedup_state"])
    state["function_id"] = "f" * 64
    forged = conductor_main({**bound, "evil": True, "owdedup_state": state}, ENV, contexts)
    assert "signature" in forged["error"]
    unsigned = {k: v for k, v in state.items() if k != "sig"}
    assert "error" in conductor_main({**bound, "owdedup_state": unsigned}, ENV, contexts)
    # signed with another key (another namespace's) is no better
    other = conductor_main({**bound, "owdedup_state": first["state"]["owdedup_state"]},
                           {**ENV, "__OW_API_KEY": "x:y"}, contexts)
    assert "signature" in other["error"]
    assert open_records(f"sqlite://{tmp_path / 'records.sqlite'}").stats() == []


def test_a_missing_object_names_the_action_and_the_object(
    bound: dict[str, Any], contexts: ContextCache
) -> None:
    result = conductor_main({**bound, **job("gone.jpg")}, ENV, contexts)
    assert result["error_kind"] == "not-found"
    assert "myfunction" in result["error"] and "photos/gone.jpg" in result["error"]
    missing = conductor_main({**bound, "key": "a.jpg"}, ENV, contexts)
    assert "'bucket'" in missing["error"] and "myfunction" in missing["error"]


def test_several_object_references(bound: dict[str, Any], contexts: ContextCache) -> None:
    two = {**bound, "owdedup_objects": "src_bucket/src_key,ref_bucket/ref_key"}
    wrapped = Wrapped()
    params = {"src_bucket": "photos", "src_key": "a.jpg", "ref_bucket": "photos",
              "ref_key": "other.jpg"}
    call(two, contexts, wrapped, **params)
    call(two, contexts, wrapped, **{**params, "src_key": "copy.jpg"})
    assert len(wrapped.runs) == 1
    call(two, contexts, wrapped, **{**params, "src_key": "other.jpg", "ref_key": "a.jpg"})
    assert len(wrapped.runs) == 2  # the same objects in other roles: another call


def test_a_result_over_the_limit_is_an_error_and_not_recorded(
    bound: dict[str, Any], contexts: ContextCache, tmp_path: Path
) -> None:
    first = conductor_main({**bound, **job()}, ENV, contexts)
    huge = {"blob": "x" * RESULT_LIMIT_BYTES}
    second = conductor_main({**bound, **huge, **first["state"]}, ENV, contexts)
    assert "over OpenWhisk's" in second["error"] and "myfunction" in second["error"]
    assert open_records(f"sqlite://{tmp_path / 'records.sqlite'}").stats() == []


def test_a_vanished_object_in_a_recorded_result_makes_a_miss(
    bound: dict[str, Any], contexts: ContextCache, store_root: Path
) -> None:
    (store_root / "out").mkdir()
    (store_root / "out" / "made.txt").write_text("output")
    runs: list[dict[str, Any]] = []

    def writes(params: dict[str, Any]) -> dict[str, Any]:
        runs.append(params)
        return {"output": {"bucket": "out", "key": "made.txt"}}

    first = call(bound, contexts, writes, **job())
    assert first["output"] == {"bucket": "out", "key": "made.txt"}
    assert call(bound, contexts, writes, **job())["owdedup"]["hit"] is True
    (store_root / "out" / "made.txt").unlink()
    assert call(bound, contexts, writes, **job())["owdedup"]["hit"] is False
    assert len(runs) == 2


def test_a_non_json_parameter_is_refused_by_name(
    bound: dict[str, Any], contexts: ContextCache
) -> None:
    result = conductor_main({**bound, **job(when=object())}, ENV, contexts)
    assert "'when'" in result["error"] and "not JSON" in result["error"]


def test_without_an_api_key_and_no_pinned_version_it_says_so(
    bound: dict[str, Any], contexts: ContextCache
) -> None:
    unpinned = {k: v for k, v in bound.items() if k != "owdedup_version"}
    env = {k: v for k, v in ENV.items() if k != "__OW_API_KEY"}
    result = conductor_main({**unpinned, **job()}, env, contexts)
    assert "__OW_API_KEY" in result["error"] and "provide-api-key" in result["error"]
    assert result["error"].startswith("myfunction: ")


def test_credentials_never_reach_keys_records_results_or_logs(
    bound: dict[str, Any], contexts: ContextCache, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrapped = Wrapped()
    first = conductor_main({**bound, **job(api_token=SECRET)}, ENV, contexts)
    # the continuation's params carry it to the wrapped action; the state never does
    outputs = [json.dumps(first["state"]), first["action"]]
    component = wrapped(first["params"])
    assert wrapped.runs[0]["api_token"] == SECRET  # the action gets its own parameter
    second = conductor_main({**bound, **component, **first["state"]}, ENV, contexts)
    hit = call(bound, contexts, wrapped, **job(api_token=SECRET))
    broken = conductor_main({**bound, **job("gone.jpg")}, ENV, contexts)
    outputs += [json.dumps(second), json.dumps(hit), json.dumps(broken), caplog.text]
    contexts.close()
    outputs.append((tmp_path / "records.sqlite").read_bytes().decode("latin-1"))
    for text in outputs:
        assert SECRET not in text and API_KEY not in text
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert all(digest not in text for text in outputs)


def test_parameter_values_are_hashed_never_kept(
    bound: dict[str, Any], contexts: ContextCache, tmp_path: Path
) -> None:
    """Even a parameter not declared as a credential has only its name in the state and the
    record: its value is in the key's hash alone."""
    value = "undeclared-Value-7f3e"
    wrapped = Wrapped()
    first = conductor_main({**bound, **job(passphrase=value)}, ENV, contexts)
    assert value not in json.dumps(first["state"])
    assert first["state"]["owdedup_state"]["param_names"] == ["passphrase", "threshold"]
    second = conductor_main({**bound, **wrapped(first["params"]), **first["state"]}, ENV,
                            contexts)
    assert "error" not in second
    contexts.close()
    record_file = (tmp_path / "records.sqlite").read_bytes().decode("latin-1")
    assert value not in record_file and "passphrase" in record_file


def test_a_forged_record_at_the_calls_id_is_a_miss_and_is_replaced(
    bound: dict[str, Any], contexts: ContextCache, tmp_path: Path
) -> None:
    first = conductor_main({**bound, **job()}, ENV, contexts)
    state = first["state"]["owdedup_state"]
    records = open_records(f"sqlite://{tmp_path / 'records.sqlite'}")
    genuine = Record.for_result(function="myfunction", function_id=state["function_id"],
                                input_digest=state["input_digest"], result={"labels": ["ok"]})
    doc = genuine.to_dict()
    doc["result"] = {"labels": ["planted by a stranger"]}  # not the size it declares
    records.put(Record.from_dict(doc))
    again = conductor_main({**bound, **job()}, ENV, contexts)
    assert "action" in again  # not believed: a miss
    wrapped = Wrapped()
    second = conductor_main({**bound, **wrapped(again["params"]), **again["state"]}, ENV,
                            contexts)
    assert second["params"]["labels"] == ["cat"]
    hit = call(bound, contexts, wrapped, **job())
    assert hit["owdedup"]["hit"] is True and hit["labels"] == ["cat"]


def test_the_action_file_is_the_conductor(bound: dict[str, Any]) -> None:
    """actions/dedup.py, loaded as the runtime loads it, answers a continuation on a miss."""
    spec = importlib.util.spec_from_file_location("dedup_action", PROJECT / "actions" /
                                                  "dedup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "Input:" in (module.__doc__ or "") and "Output:" in (module.__doc__ or "")
    first = module.main({**bound, **job()})
    assert first["action"].endswith("/myfunction") and first["params"] == job()
