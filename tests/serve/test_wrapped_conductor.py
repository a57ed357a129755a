"""A user's action wrapped by ``owdedup wrap`` and invoked through ``owdedup serve``, which runs
conductor actions as OpenWhisk does (issue 10, items 1, 3, 5): miss, then hit under another
object name without running the action; code or bound-parameter updates miss; an ignored
parameter's change hits; an error is not recorded; a sequence is wrapped the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
