"""Identical calls in flight through the conductor run the wrapped action once (issue 11,
item 1): the first activation that misses claims the call's key for as long as the wrapped
action may run, the lease travels in the signed state, and the second activation lets it go
after recording (or after an error). Other first activations wait and end with the recorded
result, compute when the holder failed, and take over a lease whose holder never came back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.context import ContextCache
from owdedup.runtime.records import Lease, open_records
from owdedup.runtime.wrapped import coalesce
from owdedup.runtime.wrapped.conductor import conductor_main
from tests.unit.test_conductor import ENV, Wrapped, bound, job

__all__ = ["bound"]  # the fixture, shared


@pytest.fixture
def holder_contexts() -> Iterator[ContextCache]:
    cache = ContextCache()
    yield cache
    cache.close()


def waiter_env(activation: str) -> dict[str, str]:
    """A first activation of its own, with a minute to live (so it waits up to half of it)."""
    return {**ENV, "__OW_ACTIVATION_ID": activation,
            "__OW_DEADLINE": str(int((time.time() + 60) * 1000))}


class Waiter(threading.Thread):
    """Another first activation of the same call, in a container (context cache) of its own;
    *polling* is set once it has found the lease held and polls it."""

    def __init__(self, params: dict[str, Any], activation: str) -> None:
        super().__init__()
        self.params, self.env = params, waiter_env(activation)
        self.contexts = ContextCache()
        self.polling = threading.Event()
        self.result: dict[str, Any] = {}
        records = self.contexts.get(_settings_of(params)).records
        polled = records.get_lease

        def spy(function_id: str, digest: str) -> Lease | None:
            self.polling.set()
            return polled(function_id, digest)

        setattr(records, "get_lease", spy)  # noqa: B010 - a spy on this instance only

    def run(self) -> None:
        try:
            self.result = conductor_main(self.params, self.env, self.contexts)
        finally:
            self.contexts.close()


def _settings_of(params: dict[str, Any]) -> Any:
    from owdedup.runtime.wrapped.config import WrapConfig

    return WrapConfig.from_params(params, ENV).settings


def test_a_waiting_call_ends_with_the_holders_result(
    bound: dict[str, Any], holder_contexts: ContextCache, tmp_path: Path,
) -> None:
    wrapped = Wrapped()
    first = conductor_main({**bound, **job()}, ENV, holder_contexts)
    assert "action" in first and "lease" in first["state"]["owdedup_state"]
    waiter = Waiter({**bound, **job("copy.jpg")}, "c" * 32)  # the same bytes, another name
    waiter.start()
    assert waiter.polling.wait(60)
    second = conductor_main({**bound, **wrapped(first["params"]), **first["state"]},
                            {**ENV, "__OW_ACTIVATION_ID": "b" * 32}, holder_contexts)
    waiter.join(timeout=60)
    assert len(wrapped.runs) == 1
    coalesced = waiter.result["params"]
    assert coalesced["labels"] == ["cat"] == second["params"]["labels"]
    assert coalesced["owdedup"]["hit"] is True and coalesced["owdedup"]["coalesced"] is True
    state = first["state"]["owdedup_state"]
    records = open_records(f"sqlite://{tmp_path / 'records.sqlite'}")
    assert records.get_lease(state["function_id"], state["input_digest"]) is None


def test_a_failed_holder_lets_a_waiting_call_run_the_action(
    bound: dict[str, Any], holder_contexts: ContextCache,
) -> None:
    first = conductor_main({**bound, **job()}, ENV, holder_contexts)
    waiter = Waiter({**bound, **job()}, "c" * 32)
    waiter.start()
    assert waiter.polling.wait(60)
    failed = {"error": "The action exceeded its time limits of 100 milliseconds."}
    conductor_main({**bound, **failed, **first["state"]}, ENV, holder_contexts)
    waiter.join(timeout=60)
    assert waiter.result["action"] == "/guest/myfunction"  # it runs the wrapped action
    assert "lease" in waiter.result["state"]["owdedup_state"]


def test_a_holder_that_never_came_back_is_taken_over(
    bound: dict[str, Any], holder_contexts: ContextCache, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(coalesce, "UNKNOWN_TIMEOUT_S", 1.0)  # the wrapped action's limit
    monkeypatch.setattr(coalesce, "LEASE_MARGIN_S", 0.5)
    first = conductor_main({**bound, **job()}, ENV, holder_contexts)
    held = first["state"]["owdedup_state"]["lease"]
    assert held["owner"] == "a" * 32
    # its wrapped action was killed and its conductor never ran again: the lease expires
    taker = conductor_main({**bound, **job()}, waiter_env("c" * 32), ContextCache())
    state = taker["state"]["owdedup_state"]
    assert taker["action"] == "/guest/myfunction" and state["lease"]["owner"] == "c" * 32
    wrapped = Wrapped()
    done = conductor_main({**bound, **wrapped(taker["params"]), **taker["state"]},
                          waiter_env("d" * 32), holder_contexts)
    assert done["params"]["owdedup"]["hit"] is False
    records = open_records(f"sqlite://{tmp_path / 'records.sqlite'}")
    assert records.get_lease(state["function_id"], state["input_digest"]) is None
    # the late holder's second activation, if it came after all, leaves no trace either
    late = conductor_main({**bound, **wrapped(first["params"]), **first["state"]}, ENV,
                          holder_contexts)
    assert late["params"]["labels"] == ["cat"]
    assert records.get_lease(state["function_id"], state["input_digest"]) is None


def test_the_lease_lasts_the_wrapped_actions_time_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    definitions = {"guest/actions/slow?code=false": {"limits": {"timeout": 120_000},
                                                      "exec": {"kind": "python:3"}},
                   "guest/actions/seq?code=false": {"limits": {"timeout": 60_000},
                                                     "exec": {"kind": "sequence"}}}
    monkeypatch.setattr(coalesce, "get_entity",
                        lambda path, env, purpose: definitions.get(path))
    monkeypatch.setattr(coalesce, "_TIMEOUTS", {})
    assert coalesce.conductor_lease_s("slow", ENV, pinned=False) == 120 + coalesce.LEASE_MARGIN_S
    assert coalesce.wrapped_timeout_s("seq", ENV, pinned=False) == coalesce.UNKNOWN_TIMEOUT_S
    assert coalesce.wrapped_timeout_s("slow", ENV, pinned=True) == coalesce.UNKNOWN_TIMEOUT_S
    assert coalesce.wrapped_timeout_s("gone", ENV, pinned=False) == coalesce.UNKNOWN_TIMEOUT_S
