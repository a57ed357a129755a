"""Conductor actions in the shared engine, through the in-process executor and a manifest,
against OpenWhisk's ``docs/conductors.md`` and its controller (``PrimitiveActions``)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from owdedup.engine.activation import (
    APPLICATION_ERROR,
    INTERNAL_ERROR,
    SUCCESS,
    Activation,
)
from owdedup.engine.conductor import is_truthy, resolve_name
from owdedup.engine.executor import Engine
from owdedup.engine.local import local_executor
from owdedup.runtime.errors import ConfigError
from tests import conductor_actions as code

MANIFEST = """
packages:
  p:
    actions:
      triple:
        function: actions/triple.py
      increment:
        function: actions/increment.py
      tripleAndIncrement:
        function: actions/tripleAndIncrement.py
        annotations:
          conductor: true
      scripted:
        function: actions/scripted.py
        annotations:
          conductor: true
      keyed:
        function: actions/tripleAndIncrement.py
        conductor: true
      notConductor:
        function: actions/scripted.py
        annotations:
          conductor: false
      echo:
        function: actions/echo.py
        inputs:
          who: echo
      fail:
        function: actions/fail.py
      crash:
        function: actions/crash.py
      ghost:
        function: actions/ghost.py
      listing:
        function: actions/listing.py
      listingConductor:
        function: actions/listing.py
        annotations:
          conductor: true
      big:
        function: actions/echo.py
        limits:
          memorySize: 512
    sequences:
      tripleTwice:
        actions: triple, triple
      wrapped:
        actions: tripleAndIncrement, increment
"""

FILES = {
    "triple.py": code.TRIPLE, "increment.py": code.INCREMENT, "echo.py": code.ECHO,
    "tripleAndIncrement.py": code.triple_and_increment("p/"), "scripted.py": code.SCRIPTED,
    "fail.py": code.FAIL, "crash.py": code.CRASH,
    "listing.py": "def main(params):\n    return [1, 2]\n",
    # no ghost.py: its code cannot be loaded, so it cannot be invoked at all
}


class Recorded:
    """An engine with every activation it records, by id."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.records: dict[str, Activation] = {}
        engine.on_activation = lambda activation: self.records.update(
            {activation.activation_id: activation})

    def run(self, name: str, payload: dict[str, Any]) -> Activation:
        return self.engine.invoke(name, payload)

    def script(self, *steps: dict[str, Any], **payload: Any) -> Activation:
        return self.engine.invoke("p/scripted", {"$script": list(steps), **payload})

    def derived(self, primary: Activation) -> list[Activation]:
        return [self.records[i] for i in primary.to_dict()["logs"]]


@pytest.fixture
def wsk(tmp_path: Path) -> Recorded:
    (tmp_path / "manifest.yaml").write_text(MANIFEST)
    (tmp_path / "actions").mkdir()
    for name, source in FILES.items():
        (tmp_path / "actions" / name).write_text(source)
    engine = local_executor(tmp_path / "manifest.yaml", {})
    ticks = itertools.count(1000, 7)  # every reading of the clock is 7 ms later
    engine.clock_ms = lambda: next(ticks)
    return Recorded(engine)


def seen(activation: Activation) -> list[dict[str, Any]]:
    """What the scripted conductor was given, activation by activation."""
    assert activation.status == SUCCESS, activation.result
    return list(activation.result["seen"])


def test_triple_and_increment_as_the_docs_run_it(wsk: Recorded) -> None:
    primary = wsk.run("p/tripleAndIncrement", {"value": 3})
    assert (primary.status, primary.result) == (SUCCESS, {"value": 10})
    derived = wsk.derived(primary)
    assert [d.name for d in derived] == ["p/tripleAndIncrement", "p/triple",
                                         "p/tripleAndIncrement", "p/increment",
                                         "p/tripleAndIncrement"]
    assert [d.result for d in derived] == [
        {"action": "p/triple", "params": {"value": 3}, "state": {"$step": 1}},
        {"value": 9},
        {"action": "p/increment", "params": {"value": 9}, "state": {"$step": 2}},
        {"value": 10},
        {"params": {"value": 10}},
    ]


def test_primary_record_is_a_sequence_record_with_conductor(wsk: Recorded) -> None:
    primary = wsk.run("p/tripleAndIncrement", {"value": 3})
    record = primary.to_dict()
    annotations = {a["key"]: a["value"] for a in record["annotations"]}
    assert annotations["conductor"] is True and annotations["kind"] == "sequence"
    assert annotations["topmost"] is True and annotations["path"] == "guest/p/tripleAndIncrement"
    assert "causedBy" not in annotations and "cause" not in record
    assert annotations["limits"] == {"concurrency": 1, "logs": 10, "memory": 256,
                                     "timeout": 60_000}
    derived = [d.to_dict() for d in wsk.derived(primary)]
    assert len(record["logs"]) == 5 and len(set(record["logs"])) == 5
    # Its duration is the sum of the derived activations', not its own end - start.
    assert record["duration"] == sum(d["duration"] for d in derived)
    assert record["duration"] < record["end"] - record["start"]
    assert record["start"] <= min(d["start"] for d in derived)
    assert record["end"] >= max(d["end"] for d in derived)
    for doc in derived:
        keys = {a["key"]: a["value"] for a in doc["annotations"]}
        assert keys["causedBy"] == "sequence" and doc["cause"] == primary.activation_id
        assert keys["kind"] == "python:3.11" and "conductor" not in keys


def test_error_from_the_conductor_ends_the_composition(wsk: Recorded) -> None:
    primary = wsk.script({"action": "p/triple", "params": {"value": 2}},
                         {"error": "no more", "detail": 1})
    assert primary.status == APPLICATION_ERROR
    assert primary.result == {"error": "no more", "detail": 1}
    assert [d.name for d in wsk.derived(primary)] == ["p/scripted", "p/triple", "p/scripted"]


def test_component_error_goes_back_to_the_conductor(wsk: Recorded) -> None:
    primary = wsk.script({"action": "p/fail"}, {"action": "p/crash"}, {"action": "p/triple"})
    assert seen(primary)[1:] == [
        {"error": "bad thing", "key": "k"},  # an error result
        {"error": "boom"},  # an uncaught exception, as the runtime answers it
        {"error": "'value'"},  # triple on {}: no params means an empty dictionary
    ]
    statuses = [d.status for d in wsk.derived(primary)]
    assert statuses == [SUCCESS, APPLICATION_ERROR, SUCCESS, APPLICATION_ERROR, SUCCESS,
                        APPLICATION_ERROR, SUCCESS]


@pytest.mark.parametrize("name", ["p/triple", "/guest/p/triple", "/_/p/triple",
                                  "guest/p/triple", "//guest//p/triple/"])
def test_component_names_resolve_as_openwhisk_resolves_them(wsk: Recorded, name: str) -> None:
    primary = wsk.script({"action": name, "params": {"value": 2}})
    assert seen(primary)[1] == {"value": 6}


@pytest.mark.parametrize(("name", "error"), [
    ("p/nothing", "Failed to resolve action with name 'guest/p/nothing' during composition."),
    ("triple", "Failed to resolve action with name 'guest/triple' during composition."),
    ("/other/p/triple",
     "Failed entitlement check for action with name 'other/p/triple' during composition."),
    ("/triple", 'Failed to parse action name from json value "/triple" during composition.'),
    ("a/b/c/d", 'Failed to parse action name from json value "a/b/c/d" during composition.'),
    ("p/bad name ", 'Failed to parse action name from json value "p/bad name " during '
                    "composition."),
    ("", 'Failed to parse action name from json value "" during composition.'),
    (42, "Failed to parse action name from json value 42 during composition."),
    ({"name": "p/triple"},
     'Failed to parse action name from json value {"name":"p/triple"} during composition.'),
])
def test_unusable_name_goes_back_to_the_conductor_as_an_error(
    wsk: Recorded, name: Any, error: str
) -> None:
    primary = wsk.script({"action": name, "params": {"value": 2}}, x=1)
    # The error, with the state of the activation that asked for the component written over.
    assert seen(primary) == [{"x": 1}, {"error": error}]
    assert len(wsk.derived(primary)) == 2  # two secondary activations, no component


def test_component_that_cannot_be_invoked_ends_with_an_internal_error(wsk: Recorded) -> None:
    primary = wsk.script({"action": "p/ghost"}, {"action": "p/triple"})
    assert primary.status == INTERNAL_ERROR
    assert primary.result == {"error": "Activation failure during composition."}
    assert [d.name for d in wsk.derived(primary)] == ["p/scripted"]
    assert primary.to_dict()["response"]["statusCode"] == 3


def test_array_result_cannot_go_on_and_ends_with_an_internal_error(wsk: Recorded) -> None:
    primary = wsk.script({"action": "p/listing"}, {"action": "p/triple"})
    assert (primary.status, primary.result) == (
        INTERNAL_ERROR, {"error": "Activation failure during composition."})
    assert [d.name for d in wsk.derived(primary)] == ["p/scripted", "p/listing"]
    conductor = wsk.run("p/listingConductor", {})
    assert conductor.status == INTERNAL_ERROR
    assert [d.result for d in wsk.derived(conductor)] == [[1, 2]]


def test_params_and_state_are_boxed(wsk: Recorded) -> None:
    # A step with its own state drops the script's: the next activation is the last one, and
    # its input is all it has seen.
    primary = wsk.script({"action": "p/echo", "params": 5, "state": 7})
    # echo got {"value": 5} (and its own default); its result has the state written over.
    assert seen(primary) == [{"value": 5, "who": "echo", "state": 7}]
    over = wsk.script({"action": "p/echo", "params": {"who": "me", "a": 1},
                       "state": {"a": "state wins"}})
    assert seen(over) == [{"who": "me", "a": "state wins"}]


def test_the_end_is_params_boxed_or_the_whole_output(wsk: Recorded) -> None:
    assert wsk.script({"params": "done"}).result == {"value": "done"}
    assert wsk.script({"params": {"k": 1}, "other": 2}).result == {"k": 1}
    whole = wsk.script({"note": "no params", "n": [1]})
    assert (whole.status, whole.result) == (SUCCESS, {"note": "no params", "n": [1]})


def test_too_many_components_goes_back_to_the_conductor(wsk: Recorded) -> None:
    wsk.engine.sequence_limit = 2
    step = {"action": "p/triple", "params": {"value": 1}}
    primary = wsk.script(step, step, step)
    assert seen(primary)[1:] == [{"value": 3}, {"value": 3},
                                 {"error": "Too many actions in the composition."}]
    assert [d.name for d in wsk.derived(primary)].count("p/triple") == 2


def test_too_many_conductor_activations_is_an_application_error(wsk: Recorded) -> None:
    wsk.engine.sequence_limit = 2
    primary = wsk.script(*[{"action": "/unparsable"}] * 10)
    assert primary.status == APPLICATION_ERROR
    assert primary.result == {"error": "Too many actions in the composition."}
    assert len(wsk.derived(primary)) == 5  # 2n + 1 secondary activations


def test_nested_conductor_shares_the_limits_and_keeps_its_own_record(wsk: Recorded) -> None:
    primary = wsk.script({"action": "p/tripleAndIncrement", "params": {"value": 3}})
    assert seen(primary)[1] == {"value": 10}  # the inner composition's result
    outer = wsk.derived(primary)
    assert [d.name for d in outer] == ["p/scripted", "p/tripleAndIncrement", "p/scripted"]
    inner = outer[1].to_dict()  # only its primary id is in the outer logs
    keys = {a["key"]: a["value"] for a in inner["annotations"]}
    assert keys["conductor"] is True and keys["topmost"] is False
    assert keys["causedBy"] == "sequence" and inner["cause"] == primary.activation_id
    assert len(inner["logs"]) == 5
    assert all(wsk.records[i].cause == outer[1].activation_id for i in inner["logs"])

    # n = 2 allows 5 secondary activations in all: the outer one's first, the inner one's
    # three and the outer one's second, which then cannot run again.
    wsk.engine.sequence_limit = 2
    limited = wsk.script({"action": "p/tripleAndIncrement", "params": {"value": 3}},
                         {"action": "p/tripleAndIncrement", "params": {"value": 3}})
    assert limited.result == {"error": "Too many actions in the composition."}
    assert [d.name for d in wsk.derived(limited)] == ["p/scripted", "p/tripleAndIncrement",
                                                      "p/scripted"]


def test_sequence_as_a_component_and_a_conductor_in_a_sequence(wsk: Recorded) -> None:
    primary = wsk.script({"action": "p/tripleTwice", "params": {"value": 1}})
    assert seen(primary)[1] == {"value": 9}
    component = wsk.derived(primary)[1].to_dict()
    assert component["name"] == "tripleTwice" and component["cause"] == primary.activation_id
    assert {"key": "causedBy", "value": "sequence"} in component["annotations"]
    assert len(component["logs"]) == 2  # its own components, not in the conductor's logs

    sequence = wsk.run("p/wrapped", {"value": 3})
    assert (sequence.status, sequence.result) == (SUCCESS, {"value": 11})
    composition = sequence.components[0].to_dict()
    assert composition["cause"] == sequence.activation_id
    assert {"key": "conductor", "value": True} in composition["annotations"]


def test_memory_limit_is_the_largest_of_the_run(wsk: Recorded) -> None:
    assert wsk.script({"action": "p/echo"}).annotations["limits"]["memory"] == 256
    assert wsk.script({"action": "p/big"}).annotations["limits"]["memory"] == 512


def test_only_a_truthy_conductor_annotation_makes_a_conductor(wsk: Recorded) -> None:
    plain = wsk.run("p/notConductor", {"$script": [{"action": "p/triple"}]})
    assert plain.result["action"] == "p/triple"  # just its result: nothing else ran
    values: list[Any] = [True, "true", "false", 1, {}, [], None, False, 0, 0.0, ""]
    assert [is_truthy(v) for v in values] == [True] * 6 + [False] * 5


def test_manifest_conductor_key_is_wskdeploys_annotation(wsk: Recorded, tmp_path: Path) -> None:
    keyed = wsk.run("p/keyed", {"value": 1})
    assert (keyed.result, keyed.annotations["conductor"]) == ({"value": 4}, True)
    (tmp_path / "manifest.yaml").write_text(MANIFEST.replace("conductor: true", "conductor: 1"))
    with pytest.raises(ConfigError, match="action keyed: 'conductor' must be true or false"):
        local_executor(tmp_path / "manifest.yaml", {})


def test_resolve_name_forms() -> None:
    def qualified(value: str) -> str | None:
        name = resolve_name(value, "ns")
        return None if name is None else name.qualified

    assert [qualified(v) for v in ("a", "p/a", "x/p/a", "/x/a", "/_/p/a", "/x/p/a")] == [
        "ns/a", "ns/p/a", "x/p/a", "x/a", "ns/p/a", "x/p/a"]
