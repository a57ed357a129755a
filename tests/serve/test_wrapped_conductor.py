"""A user's action wrapped by ``owdedup wrap`` and invoked through ``owdedup serve``, which runs
conductor actions as OpenWhisk does (issue 10, items 1, 3, 5): miss, then hit under another
object name without running the action; code or bound-parameter updates miss; an ignored
parameter's change hits; an error is not recorded; a sequence is wrapped the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from owdedup.cli import app
from owdedup.serve.catalog import kv_dict
from owdedup.serve.server import DevServer
from tests.serve.conftest import Client, ServerFactory, params
from tests.serve.test_wrap_command import environment, wrap

CODE = '''
from pathlib import Path

def main(params):
    if params.get("fail"):
        return {"error": "cannot label " + params["key"]}
    data = Path(params["root"], params["bucket"], params["key"]).read_bytes()
    return {"length": len(data), "factor": params.get("factor", 1)}
'''
SUFFIX = '''
def main(params):
    return {**params, "suffixed": True}
'''


@pytest.fixture
def served(make_server: ServerFactory, runtime_site: Path) -> Iterator[DevServer]:
    yield make_server(runtime_site=runtime_site)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "in").mkdir(parents=True)
    (root / "in" / "a.jpg").write_bytes(b"same bytes")
    (root / "in" / "b.jpg").write_bytes(b"same bytes")
    return root


def wrapped(served: DevServer, tmp_path: Path, store: Path, *args: str) -> None:
    env = {**environment(served, tmp_path), "OWDEDUP_STORE": f"file://{store}"}
    del env["OWDEDUP_STORE_ACCESS_KEY"], env["OWDEDUP_STORE_SECRET_KEY"]
    code, output = wrap(env, *args)
    assert code == 0, output


def runs_of(client: Client, name: str) -> int:
    listed = client.request("GET", f"activations?name={name}&limit=200").json
    return len(listed)


def call(client: Client, store: Path, key: str, **extra: Any) -> dict[str, Any]:
    reply = client.invoke("myfunction-dedup", {"bucket": "in", "key": key, "root": str(store),
                                               "dest_bucket": "out", **extra}, result=True)
    return dict(reply.json)


def test_miss_then_hit_and_what_makes_a_miss(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    client = Client(served.url)
    client.action("myfunction", CODE, parameters=params({"factor": 2}))
    wrapped(served, tmp_path, store, "myfunction", "--ignore", "dest_bucket,root")
    first = call(client, store, "a.jpg")
    assert first["length"] == 10 and first["factor"] == 2
    assert first["owdedup"]["hit"] is False
    assert runs_of(client, "myfunction") == 1
    hit = call(client, store, "b.jpg", dest_bucket="elsewhere")  # same bytes, ignored param
    assert hit["owdedup"]["hit"] is True and hit["length"] == 10
    assert hit["owdedup"]["activation"] == first["owdedup"]["activation"]
    assert runs_of(client, "myfunction") == 1  # the wrapped action never started

    client.action("myfunction", CODE, parameters=params({"factor": 3}))  # bound parameter
    assert call(client, store, "b.jpg")["factor"] == 3
    assert runs_of(client, "myfunction") == 2
    client.action("myfunction", CODE + "# v2\n", parameters=params({"factor": 3}))  # code
    assert call(client, store, "a.jpg")["owdedup"]["hit"] is False
    assert call(client, store, "b.jpg")["owdedup"]["hit"] is True
    assert runs_of(client, "myfunction") == 3


def test_an_error_is_returned_and_not_recorded(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    client = Client(served.url)
    client.action("myfunction", CODE)
    wrapped(served, tmp_path, store, "myfunction", "--ignore", "root")
    reply = client.invoke("myfunction-dedup", {"bucket": "in", "key": "a.jpg", "fail": True,
                                               "root": str(store)}, result=True)
    assert reply.status == 502 and reply.json["error"] == "cannot label a.jpg"
    again = client.invoke("myfunction-dedup", {"bucket": "in", "key": "a.jpg", "fail": True,
                                               "root": str(store)}, result=True)
    assert again.status == 502
    assert runs_of(client, "myfunction") == 2  # nothing was recorded: it ran again
    missing = client.invoke("myfunction-dedup", {"bucket": "in", "key": "gone.jpg",
                                                 "root": str(store)}, result=True)
    assert missing.status == 502
    assert "myfunction" in missing.json["error"] and "in/gone.jpg" in missing.json["error"]
    assert runs_of(client, "myfunction") == 2


def test_a_sequence_is_wrapped_and_follows_its_components(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    client = Client(served.url)
    client.action("label", CODE)
    client.action("suffix", SUFFIX)
    sequence = {"exec": {"kind": "sequence", "components": ["/guest/label", "/guest/suffix"]}}
    assert client.put("actions/myfunction", sequence).status == 200
    wrapped(served, tmp_path, store, "myfunction", "--ignore", "root,dest_bucket")
    assert kv_dict(client.request("GET", "actions/myfunction-dedup").json["annotations"])[
        "conductor"] is True
    first = call(client, store, "a.jpg")
    assert first["suffixed"] is True and first["owdedup"]["hit"] is False
    assert call(client, store, "b.jpg")["owdedup"]["hit"] is True
    assert runs_of(client, "label") == 1
    client.action("suffix", SUFFIX + "# changed\n")  # a component changes: a miss
    assert call(client, store, "b.jpg")["owdedup"]["hit"] is False
    assert runs_of(client, "label") == 2


def test_a_deleted_or_timed_out_action_is_an_error_naming_it_and_the_object(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    client = Client(served.url)
    slow = "import time\n\ndef main(params):\n    time.sleep(2)\n    return {'late': True}\n"
    client.action("myfunction", slow, limits={"timeout": 300})
    wrapped(served, tmp_path, store, "myfunction", "--ignore", "root")
    timed_out = client.invoke("myfunction-dedup", {"bucket": "in", "key": "a.jpg"},
                              result=True)
    assert timed_out.status == 502 and "time limit" in timed_out.json["error"], timed_out.json
    assert timed_out.json["owdedup"]["objects"] == ["in/a.jpg"]  # the action and the object
    assert timed_out.json["owdedup"]["action"] == "myfunction"
    again = client.invoke("myfunction-dedup", {"bucket": "in", "key": "a.jpg"}, result=True)
    assert again.status == 502  # not recorded: it ran (and timed out) again
    assert runs_of(client, "myfunction") == 2
    assert client.request("DELETE", "actions/myfunction").status == 200
    gone = client.invoke("myfunction-dedup", {"bucket": "in", "key": "a.jpg"}, result=True)
    assert gone.status == 502
    assert "the wrapped action myfunction does not exist" in gone.json["error"]
    assert "in/a.jpg" in gone.json["error"]


SLOW = '''
import time
from pathlib import Path

def main(params):
    time.sleep(1)  # long enough for the other calls to find the lease held
    data = Path(params["root"], params["bucket"], params["key"]).read_bytes()
    return {"length": len(data)}
'''


def test_eight_simultaneous_calls_run_the_wrapped_action_once(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    """Issue 11, item 1, through the conductor: eight identical calls at once. The first
    claims the key for the wrapped action's run; the others wait for its recorded result."""
    client = Client(served.url)
    client.action("myfunction", SLOW)
    wrapped(served, tmp_path, store, "myfunction", "--ignore", "root,dest_bucket")
    for i in range(8):
        (store / "in" / f"copy{i}.jpg").write_bytes(b"one content, eight names")
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda i: call(client, store, f"copy{i}.jpg"), range(8)))
    assert [reply.get("length") for reply in replies] == [24] * 8, replies
    assert sorted(reply["owdedup"]["hit"] for reply in replies) == [False] + [True] * 7
    assert len({reply["owdedup"]["activation"] for reply in replies}) == 1  # one result
    assert runs_of(client, "myfunction") == 1
    after = explain(served, tmp_path, store, "copy0.jpg")
    assert (after["verdict"], after["lease"]) == ("hit", None)  # one record, no lease left


def explain(served: DevServer, tmp_path: Path, store: Path, key: str,
            *pairs: str) -> dict[str, Any]:
    env = {**environment(served, tmp_path), "OWDEDUP_STORE": f"file://{store}"}
    args = ["explain", f"in/{key}", "--function", "myfunction-dedup", "--json",
            "--param", f"root={store}"]
    for pair in pairs:
        args += ["--param", pair]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    explained: dict[str, Any] = json.loads(result.output)
    return explained


def test_explain_a_wrapped_call_hit_miss_and_what_differs(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    """Issue 11, item 3, for a wrapped action: the call keyed as its conductor keys it, its
    record, and on a miss what differs from the records of the same content, as far as a
    record keeps it (the action's version, the parameters' names; never their values)."""
    client = Client(served.url)
    client.action("myfunction", CODE, parameters=params({"factor": 2}))
    wrapped(served, tmp_path, store, "myfunction", "--ignore", "dest_bucket,root")
    fresh = explain(served, tmp_path, store, "a.jpg")
    assert (fresh["verdict"], fresh["record"], fresh["other_identities"]) == ("miss", "none", [])
    assert fresh["parts"]["parameters"] == [] and fresh["action"] == "myfunction"
    assert fresh["negative"].startswith("never") and fresh["not_broken_down"]
    call(client, store, "a.jpg", mode="fast")
    hit = explain(served, tmp_path, store, "b.jpg", "mode=fast")  # same bytes, another name
    assert (hit["verdict"], hit["record"]) == ("hit", "found")
    assert hit["identity"] != fresh["identity"]

    def differs(*pairs: str) -> list[str]:
        missed = explain(served, tmp_path, store, "b.jpg", *pairs)
        assert missed["verdict"] == "miss"
        (other,) = missed["other_identities"]
        assert other["identity"] == hit["identity"]
        return list(other["differs"])

    assert differs() == ["parameter mode no longer given"]
    assert differs("mode=fast", "size=2") == ["parameter size given (not before)"]
    (value,) = differs("mode=slow")
    assert "a parameter's value differs" in value
    client.action("myfunction", CODE, parameters=params({"factor": 3}))  # a new version
    (version,) = differs("mode=fast")
    assert version.startswith("wrapped action version ")
    assert "fast" not in json.dumps(explain(served, tmp_path, store, "b.jpg", "mode=fast"))
