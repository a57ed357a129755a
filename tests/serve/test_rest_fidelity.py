"""``owdedup serve`` answers as OpenWhisk's controller does (docs/rest_api.md, the controller's
swagger and sources): bindings, final parameters, blocking waits, arrays, limits, status codes
and error texts, activation records. Pure: the REST layer with the real catalog, controller
and engine, and a runner standing in for the action processes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from owdedup.engine.activation import Activation
from owdedup.engine.executor import Engine
from owdedup.engine.manifest import ActionDef, RuleDef, SequenceDef, TriggerDef
from owdedup.serve.api import Request, RestApi
from owdedup.serve.catalog import MB, ServeCatalog, parse_name
from owdedup.serve.controller import ActivationStore, Controller, SystemRunner
from owdedup.serve.server import usage_lines
from tests.serve.conftest import AUTH, params, wait_for
from tests.serve.test_api import Api

CODE = {"exec": {"kind": "python:3.11", "code": "def main(p):\n    return p\n"}}


class ScriptedRunner:
    """Echoes like the REST tests' runner; ``hold`` waits for :attr:`release`, ``array``
    returns a list, ``cold`` reports an init time for the activation."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.init_times: dict[str, int] = {}

    def run(self, action: ActionDef, params: dict[str, Any],
            activation_id: str) -> tuple[Any, list[str], bool]:
        if params.get("hold"):
            self.release.wait(30)
        if params.get("cold"):
            self.init_times[activation_id] = 42
        if params.get("array"):
            return [1, {"two": 2}], [], False
        if params.get("overrun"):  # worded as the process runner reports a time-out
            return {"error": "The action exceeded its time limits of 100 milliseconds."}, [], True
        return {"action": action.fqn, "params": params}, [], False

    def take_init_ms(self, activation_id: str) -> int | None:
        return self.init_times.pop(activation_id, None)


class ScriptedApi(Api):
    def __init__(self) -> None:
        self.catalog = ServeCatalog()
        self.scripted = ScriptedRunner()
        self.controller = Controller(self.catalog, SystemRunner(self.scripted),
                                     init_ms=self.scripted.take_init_ms)
        self.api = RestApi(self.catalog, self.controller, auth=AUTH, blocking_wait_s=10)


@pytest.fixture
def api() -> Iterator[ScriptedApi]:
    handle = ScriptedApi()
    yield handle
    handle.scripted.release.set()
    handle.catalog.close()


def annotations_of(record: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: a["value"] for a in record["annotations"]}


# -- package bindings --------------------------------------------------------------------


def test_binding_is_annotated_merges_parameters_and_lists_the_actions(api: ScriptedApi) -> None:
    api("PUT", "packages/base", {"parameters": params({"a": "base", "b": "base"})})
    api("PUT", "actions/base/x", CODE)
    bound = api("PUT", "packages/bnd", {"binding": {"namespace": "_", "name": "base"},
                                        "parameters": params({"b": "binding"})})
    assert bound.status == 200
    got = api("GET", "packages/bnd").body
    assert annotations_of(got)["binding"] == {"namespace": "guest", "name": "base"}
    assert {p["key"]: p["value"] for p in got["parameters"]} == {"a": "base", "b": "binding"}
    assert [a["name"] for a in got["actions"]] == ["x"]
    assert got["binding"] == {"namespace": "guest", "name": "base"}


def test_invoking_through_a_binding_reports_the_resolved_action(api: ScriptedApi) -> None:
    api("PUT", "packages/base", {"parameters": params({"a": "base"})})
    api("PUT", "actions/base/x", CODE)
    api("PUT", "packages/bnd", {"binding": {"name": "base"}, "parameters": params({"a": "b"})})
    reply = api("POST", "actions/bnd/x?blocking=true", {})
    assert reply.status == 200
    notes = annotations_of(reply.body)
    assert notes["path"] == "guest/base/x"
    assert notes["binding"] == "guest/bnd"
    assert reply.body["response"]["result"]["params"] == {"a": "b"}


def test_binding_to_a_missing_package_is_400(api: ScriptedApi) -> None:
    reply = api("PUT", "packages/bnd", {"binding": {"namespace": "_", "name": "nowhere"}})
    assert reply.status == 400
    assert reply.body["error"] == "Binding references a package that does not exist."


# -- invocations ---------------------------------------------------------------------------


def test_final_parameters_cannot_be_overridden(api: ScriptedApi) -> None:
    api("PUT", "actions/locked", {**CODE, "parameters": params({"bucket": "mine"}),
                                  "annotations": params({"final": True})})
    refused = api("POST", "actions/locked?blocking=true", {"bucket": "theirs"})
    assert refused.status == 400
    assert refused.body["error"] == ("Request defines parameters that are not allowed "
                                     "(e.g., reserved properties).")
    allowed = api("POST", "actions/locked?blocking=true&result=true", {"other": 1})
    assert allowed.status == 200
    assert allowed.body["params"] == {"bucket": "mine", "other": 1}
    api("PUT", "actions/open", {**CODE, "parameters": params({"bucket": "mine"})})
    assert api("POST", "actions/open?blocking=true", {"bucket": "theirs"}).status == 200


def test_blocking_invoke_honours_timeout_then_answers_202(api: ScriptedApi) -> None:
    api("PUT", "actions/slow", CODE)
    reply = api("POST", "actions/slow?blocking=true&timeout=200", {"hold": True})
    assert reply.status == 202
    assert list(reply.body) == ["activationId"]
    activation_id = reply.body["activationId"]
    assert api("GET", f"activations/{activation_id}").status == 404  # still running
    api.scripted.release.set()
    wait_for(lambda: api.controller.store.get(activation_id), what="the held activation")
    assert api("GET", f"activations/{activation_id}").status == 200
    over = api("POST", "actions/slow?blocking=true&timeout=60001", {})
    assert over.status == 400
    assert over.body["error"] == "Timeout must be number of milliseconds up to 60000."


def test_an_action_may_return_an_array(api: ScriptedApi) -> None:
    api("PUT", "actions/listy", CODE)
    full = api("POST", "actions/listy?blocking=true", {"array": True})
    assert full.status == 200
    assert full.body["response"]["result"] == [1, {"two": 2}]
    assert full.body["response"]["success"] is True
    only = api("POST", "actions/listy?blocking=true&result=true", {"array": True})
    assert only.status == 200 and only.body == [1, {"two": 2}]


# -- namespaces, packages, listings ----------------------------------------------------------


def test_namespace_limits(api: ScriptedApi) -> None:
    reply = api("GET", "/api/v1/namespaces/_/limits")
    assert reply.status == 200
    assert reply.body["invocationsPerMinute"] == 120
    assert reply.body["concurrentInvocations"] == 100
    assert reply.body["firesPerMinute"] == 60


def test_package_delete_needs_force_when_not_empty(api: ScriptedApi) -> None:
    api("PUT", "packages/p", {})
    api("PUT", "actions/p/one", CODE)
    single = api("DELETE", "packages/p")
    assert single.status == 409
    assert single.body["error"] == "Package not empty (contains 1 entity)"
    api("PUT", "actions/p/two", CODE)
    assert api("DELETE", "packages/p").body["error"] == "Package not empty (contains 2 entities)"
    forced = api("DELETE", "packages/p?force=true")
    assert forced.status == 200
    assert api("GET", "packages/p").status == 404
    assert api("GET", "actions/p/one").status == 404 and api("GET", "actions").body == []


def test_package_list_public(api: ScriptedApi) -> None:
    api("PUT", "packages/shared", {"publish": True})
    api("PUT", "packages/private", {})
    assert [p["name"] for p in api("GET", "packages").body] == ["private", "shared"]
    assert [p["name"] for p in api("GET", "packages?public=true").body] == ["shared"]


def test_status_codes_for_malformed_requests(api: ScriptedApi) -> None:
    short = api("GET", "activations/abc")
    assert short.status == 400
    assert api("GET", "activations/" + "z" * 32).status == 400
    assert api("GET", "activations/" + "0" * 32).status == 404
    both = api("GET", "activations?docs=true&count=true")
    assert both.status == 400
    assert both.body["error"] == "The parameter 'docs' is not permitted with 'count'."
    nested = api("POST", "actions/x?blocking=true", raw=b"[" * 100_000 + b"]" * 100_000)
    assert nested.status == 400


def test_rule_status_change_is_an_empty_200(api: ScriptedApi) -> None:
    api("PUT", "actions/a", CODE)
    api("PUT", "triggers/t", {})
    api("PUT", "rules/r", {"trigger": "t", "action": "a"})
    reply = api("POST", "rules/r", {"status": "inactive"})
    assert reply.status == 200 and reply.encode() == b""
    assert api("GET", "rules/r").body["status"] == "inactive"


def test_a_404_names_no_other_entity(api: ScriptedApi) -> None:
    api("PUT", "actions/secret-payroll", CODE)
    for reply in (api("POST", "actions/nope?blocking=true", {}),
                  api("GET", "actions/nope"), api("DELETE", "actions/nope")):
        assert reply.status == 404
        assert "secret-payroll" not in json.dumps(reply.body)
        assert reply.body["error"] == "The requested resource does not exist."


def test_a_sequence_whose_component_is_gone_names_nothing_else(api: ScriptedApi) -> None:
    api("PUT", "actions/secret-payroll", CODE)
    api("PUT", "actions/a", CODE)
    api("PUT", "actions/s", {"exec": {"kind": "sequence", "components": ["/_/a"]}})
    api("DELETE", "actions/a")
    reply = api("POST", "actions/s?blocking=true", {})
    assert reply.status == 502
    assert reply.body["response"]["result"] == {"error": "Sequence component does not exist."}
    assert "secret-payroll" not in json.dumps(reply.body)


# -- activation records ---------------------------------------------------------------------


def test_action_record_as_openwhisk_writes_it(api: ScriptedApi) -> None:
    api("PUT", "actions/a", CODE)
    api("PUT", "actions/a?overwrite=true", {**CODE, "limits": {"memory": 128}})
    cold = api("POST", "actions/a?blocking=true", {"cold": True}).body
    assert cold["version"] == "0.0.2"
    notes = annotations_of(cold)
    assert notes["initTime"] == 42
    assert isinstance(notes["waitTime"], int) and notes["waitTime"] >= 0
    assert notes["timeout"] is False
    assert notes["limits"] == {"concurrency": 1, "logs": 10, "memory": 128, "timeout": 60000}
    assert "statusCode" not in cold["response"]
    assert cold["response"]["status"] == "success"
    warm = api("POST", "actions/a?blocking=true", {}).body
    assert "initTime" not in annotations_of(warm)  # warm: what `wsk activation list` shows
    fetched = api("GET", f"activations/{cold['activationId']}").body
    assert "statusCode" not in fetched["response"]
    assert "statusCode" not in api("GET", f"activations/{cold['activationId']}/result").body
    docs = api("GET", "activations?docs=true").body
    assert all("statusCode" not in record["response"] for record in docs)
    assert api("GET", "activations").body[0]["statusCode"] == 0  # the summary keeps it


def test_a_timed_out_activation_says_so(api: ScriptedApi) -> None:
    api("PUT", "actions/a", CODE)
    reply = api("POST", "actions/a?blocking=true", {"overrun": True})
    assert reply.status == 502
    assert reply.body["response"]["status"] == "action developer error"
    assert annotations_of(reply.body)["timeout"] is True


def test_sequence_record_topmost_and_components_caused_by(api: ScriptedApi) -> None:
    api("PUT", "actions/a", CODE)
    api("PUT", "actions/inner", {"exec": {"kind": "sequence", "components": ["/_/a"]}})
    api("PUT", "actions/s", {"exec": {"kind": "sequence", "components": ["/_/a", "/_/inner"]}})
    top = api("POST", "actions/s?blocking=true", {}).body
    assert annotations_of(top)["topmost"] is True
    first, inner = (api("GET", f"activations/{i}").body for i in top["logs"])
    assert annotations_of(first)["causedBy"] == "sequence"
    assert annotations_of(inner)["causedBy"] == "sequence"
    assert "topmost" not in annotations_of(inner)
    nested = api("GET", f"activations/{inner['logs'][0]}").body
    assert annotations_of(nested)["causedBy"] == "sequence"


# -- sequences: cycles and length ---------------------------------------------------------


def test_sequence_cycle_and_length_refused_at_create(api: ScriptedApi) -> None:
    api("PUT", "actions/a", CODE)
    api("PUT", "actions/s1", {"exec": {"kind": "sequence", "components": ["/_/a"]}})
    api("PUT", "actions/s2", {"exec": {"kind": "sequence", "components": ["/_/s1"]}})
    cycle = api("PUT", "actions/s1?overwrite=true",
                {"exec": {"kind": "sequence", "components": ["/_/s2"]}})
    assert cycle.status == 400
    assert cycle.body["error"] == "Sequence may not refer to itself."
    assert api("POST", "actions/s1?blocking=true", {}).status == 200  # unchanged, still runs
    fifty = api("PUT", "actions/fifty", {"exec": {"kind": "sequence",
                                                  "components": ["/_/a"] * 50}})
    assert fifty.status == 200
    sixty = api("PUT", "actions/sixty", {"exec": {"kind": "sequence",
                                                  "components": ["/_/a"] * 60}})
    assert sixty.status == 400
    assert sixty.body["error"] == "Too many actions in the sequence."
    nested = api("PUT", "actions/more", {"exec": {"kind": "sequence",
                                                  "components": ["/_/fifty", "/_/a"]}})
    assert nested.status == 400


class _CyclicCatalog:
    """A catalog holding a cycle (as a store written by another tool could): a -> b -> a."""

    def action(self, fqn: str) -> ActionDef | None:
        return None

    def sequence(self, fqn: str) -> SequenceDef | None:
        other = "/b" if fqn == "/a" else "/a"
        return SequenceDef("", fqn.strip("/"), (other,))

    def trigger(self, name: str) -> TriggerDef | None:
        return None

    def rules_for(self, trigger: str) -> list[RuleDef]:
        return []

    def package_inputs(self, package: str) -> dict[str, Any]:
        return {}

    def entity_names(self) -> list[str]:
        return ["a", "b"]


def test_a_cycle_that_reaches_the_engine_ends_as_an_error_not_a_crash() -> None:
    engine = Engine(_CyclicCatalog(), ScriptedRunner())
    activation = engine.invoke("/a", {})
    assert activation.status == "application error"
    assert activation.result == {"error": "Sequence may not refer to itself."}


# -- error texts -----------------------------------------------------------------------------


def test_error_texts_for_kinds_limits_and_names(api: ScriptedApi) -> None:
    kind = api("PUT", "actions/k", {"exec": {"kind": "python:2", "code": "x"}})
    assert kind.status == 400
    assert kind.body["error"].startswith("The request content was malformed:\n"
                                         "kind 'python:2' not in Set(")
    memory = api("PUT", "actions/m", {**CODE, "limits": {"memory": 1024}})
    assert memory.status == 400
    assert memory.body["error"].endswith(
        "requirement failed: memory 1024 MB exceeds allowed threshold of 512 MB")
    timeout = api("PUT", "actions/t", {**CODE, "limits": {"timeout": 50}})
    assert timeout.body["error"].endswith(
        "requirement failed: duration 50 milliseconds below allowed threshold of 100 "
        "milliseconds")
    assert api("PUT", "actions/big", {**CODE, "limits": {"memory": 512}}).status == 200
    for name in (".", "..", "-x", "a ", "%2E%2E"):
        reply = api("PUT", f"packages/{name}", {})
        assert reply.status == 400, name
        assert reply.body["error"] == "The name of the entity contains illegal characters."
    assert api("PUT", "packages/ok.name-1@x", {}).status == 200
    assert api("GET", "/", auth=None).body["limits"]["max_action_memory"] == 512 * MB


# -- the store and the banner ---------------------------------------------------------------


def test_activation_store_is_bounded_by_bytes() -> None:
    store = ActivationStore(max_bytes=200_000)
    ids = []
    for number in range(50):
        activation = Activation(f"{number:032x}", "guest", "chatty", number, number,
                                {"ok": True}, "success", logs=["x" * 10_000])
        store.put(activation)
        ids.append(activation.activation_id)
    assert store.bytes <= 200_000
    assert store.get(ids[-1]) is not None  # the newest stay
    assert store.get(ids[0]) is None  # the oldest went
    assert len(store.list()) < 50


def test_banner_suggests_a_property_line_wsk_accepts() -> None:
    lines = usage_lines("http://127.0.0.1:3233", "guest", AUTH, generated=True)
    wsk_line = next(line for line in lines if "wsk property set" in line)
    assert "--namespace" not in wsk_line
    assert f"--auth {AUTH}" in wsk_line


def test_the_memory_maximum_can_be_configured() -> None:
    catalog = ServeCatalog(max_memory_mb=2048)
    try:
        api = RestApi(catalog, Controller(catalog, ScriptedRunner()), auth=AUTH)
        assert catalog.put_action(parse_name("big", "guest"), {**CODE,
                                  "limits": {"memory": 2048}}, False)["limits"]["memory"] == 2048
        root = api.handle(Request("GET", "/"))
        assert root.body["limits"]["max_action_memory"] == 2048 * MB
    finally:
        catalog.close()
    with pytest.raises(ValueError, match="at least 256 MB"):
        ServeCatalog(max_memory_mb=200)


def test_a_sequence_of_a_missing_component_is_refused_without_naming_it(
        api: ScriptedApi) -> None:
    reply = api("PUT", "actions/seq", {"exec": {"kind": "sequence",
                                               "components": ["/_/secret-name"]}})
    assert reply.status == 400
    assert reply.body["error"] == "Sequence component does not exist."
