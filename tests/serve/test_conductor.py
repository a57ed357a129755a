"""Conductor actions through ``owdedup serve``: created with the real ``wsk`` CLI's
``--annotation conductor true`` (or a PUT with that annotation), invoked blocking and not,
their primary and derived records read back, as OpenWhisk's ``docs/conductors.md`` has it."""

from __future__ import annotations

from typing import Any

from owdedup.engine.activation import TIMED_OUT_PREFIX
from owdedup.engine.executor import SEQUENCE_LIMIT
from owdedup.serve.limits import NamespaceLimits
from tests import conductor_actions as code
from tests.serve.conftest import Client, ServerFactory, params
from tests.serve.test_limits import within_one_minute
from tests.serve.test_wsk_cli import Wsk, wsk  # noqa: F401 - the fixture, one definition


def annotations_of(record: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: a["value"] for a in record["annotations"]}


def test_wsk_creates_and_invokes_triple_and_increment(wsk: Wsk) -> None:  # noqa: F811
    files = {"triple": code.TRIPLE, "increment": code.INCREMENT,
             "tripleAndIncrement": code.triple_and_increment("")}
    for name, source in files.items():
        (wsk.home / f"{name}.py").write_text(source)
    wsk.run("action", "create", "triple", str(wsk.home / "triple.py"), "--kind", "python:3.11")
    wsk.run("action", "create", "increment", str(wsk.home / "increment.py"),
            "--kind", "python:3.11")
    created = wsk.run("action", "create", "tripleAndIncrement",
                      str(wsk.home / "tripleAndIncrement.py"), "--kind", "python:3.11",
                      "--annotation", "conductor", "true").stdout
    assert "ok: created action tripleAndIncrement" in created

    assert wsk.json("action", "invoke", "tripleAndIncrement", "-r", "-p", "value", "3") == \
        {"value": 10}

    primary = wsk.json("action", "invoke", "tripleAndIncrement", "-b", "-p", "value", "3")
    assert primary["response"]["result"] == {"value": 10} and primary["response"]["success"]
    keys = annotations_of(primary)
    assert keys["conductor"] is True and keys["kind"] == "sequence" and keys["topmost"] is True
    assert len(primary["logs"]) == 5
    derived = [wsk.json("activation", "get", i) for i in primary["logs"]]
    assert [d["name"] for d in derived] == ["tripleAndIncrement", "triple", "tripleAndIncrement",
                                            "increment", "tripleAndIncrement"]
    assert [d["response"]["result"] for d in derived][1::2] == [{"value": 9}, {"value": 10}]
    assert primary["duration"] == sum(d["duration"] for d in derived)
    for record in derived:
        assert record["cause"] == primary["activationId"]
        assert annotations_of(record)["causedBy"] == "sequence"
    got = wsk.json("activation", "get", primary["activationId"])
    assert got["logs"] == primary["logs"] and annotations_of(got)["conductor"] is True


def scripted(client: Client, *steps: dict[str, Any]) -> dict[str, Any]:
    """Invoke the scripted conductor (blocking) and return its record."""
    reply = client.invoke("scripted", {"$script": list(steps)})
    return dict(reply.json)


def test_rest_non_blocking_composition_and_its_records(client: Client) -> None:
    client.action("triple", code.TRIPLE)
    client.action("scripted", code.SCRIPTED, annotations=params({"conductor": True}))
    reply = client.invoke("scripted", {"$script": [{"action": "triple",
                                                    "params": {"value": 2}}]},
                          blocking=False)
    assert reply.status == 202
    activation_id = reply.json["activationId"]
    record = client.activation(activation_id).json
    assert record["response"]["result"] == {"seen": [{}, {"value": 6}]}
    assert annotations_of(record)["conductor"] is True and len(record["logs"]) == 3
    assert "cause" not in record
    for derived_id in record["logs"]:
        derived = client.activation(derived_id).json
        assert derived["cause"] == activation_id
        assert annotations_of(derived)["causedBy"] == "sequence"


def test_rest_failures_go_back_to_the_conductor(client: Client) -> None:
    client.action("scripted", code.SCRIPTED, annotations=params({"conductor": True}))
    client.action("fail", code.FAIL)
    client.action("echo", code.ECHO)
    client.action("slow", code.SLOW, limits={"timeout": 1000})
    record = scripted(client, {"action": "nothing"}, {"action": "fail"}, {"action": "slow"},
                      {"action": "/guest/echo", "params": 1})
    assert record["response"]["status"] == "success", record
    _, missing, failed, slow, boxed = record["response"]["result"]["seen"]
    assert missing == {"error": "Failed to resolve action with name 'guest/nothing' during "
                                "composition."}
    assert failed == {"error": "bad thing", "key": "k"}
    assert boxed == {"value": 1}
    # A component that exceeds its time limit has a record: its error goes back too.
    assert slow["error"].startswith(TIMED_OUT_PREFIX)
    slow_record = client.activation(record["logs"][4]).json
    assert slow_record["name"] == "slow" and annotations_of(slow_record)["timeout"] is True
    assert len(record["logs"]) == 8  # 5 secondary activations, 3 components


def test_rest_error_result_ends_the_composition(client: Client) -> None:
    client.action("scripted", code.SCRIPTED, annotations=params({"conductor": True}))
    reply = client.invoke("scripted", {"$script": [{"error": "given up"}]})
    assert reply.status == 502
    assert reply.json["response"]["status"] == "application error"
    assert reply.json["response"]["result"] == {"error": "given up"}
    # The composition's record, its one secondary activation's the same error.
    assert annotations_of(reply.json)["conductor"] is True and len(reply.json["logs"]) == 1
    secondary = client.activation(reply.json["logs"][0]).json
    assert secondary["response"]["result"] == {"error": "given up"}
    assert secondary["cause"] == reply.json["activationId"]


def test_rest_conductor_activations_stop_at_2n_plus_1(client: Client) -> None:
    client.action("loop", "def main(params):\n    return {'action': '/unparsable'}\n",
                  annotations=params({"conductor": True}))
    reply = client.invoke("loop")
    assert reply.json["response"]["result"] == {"error": "Too many actions in the composition."}
    assert reply.json["response"]["status"] == "application error"
    assert len(reply.json["logs"]) == 2 * SEQUENCE_LIMIT + 1


def test_a_composition_is_one_request_for_the_rate(make_server: ServerFactory) -> None:
    def check() -> None:
        client = Client(make_server(limits=NamespaceLimits(invocations_per_minute=2)).url)
        client.action("triple", code.TRIPLE)
        client.action("increment", code.INCREMENT)
        client.action("tripleAndIncrement", code.triple_and_increment(""),
                      annotations=params({"conductor": True}))
        # Five activations, one request; then one more request is allowed, not a third.
        composed = client.invoke("tripleAndIncrement", {"value": 3})
        assert composed.status == 200 and len(composed.json["logs"]) == 5
        assert client.invoke("triple", {"value": 1}).status == 200
        assert client.invoke("triple", {"value": 1}).status == 429

    within_one_minute(check)
