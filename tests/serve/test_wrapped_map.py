"""``owdedup map CONDUCTOR SRC DEST --platform openwhisk`` for an action wrapped by ``owdedup
wrap`` (issue 12, "the same for any wrapped action"), against ``owdedup serve``: the client
keys each object exactly as the conductor does, so a folder with duplicates invokes each
distinct content once, a re-run invokes nothing, and an update of the wrapped action makes
every object miss again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from owdedup.cli import app
from owdedup.openwhisk.client import Credentials, OpenWhiskClient
from owdedup.openwhisk.wrapped_map import WrappedTarget
from owdedup.runtime.context import Context
from owdedup.runtime.wrapped.results import find_result
from owdedup.serve.server import DevServer
from tests.serve.conftest import AUTH, Client, ServerFactory
from tests.serve.test_wrap_command import environment, wrap

CODE = '''
from pathlib import Path

def main(params):
    data = Path(params["root"], params["bucket"], params["key"]).read_bytes()
    if data.startswith(b"bad"):
        return {"error": "cannot count " + params["key"]}
    return {"length": len(data), "factor": params.get("factor", "1")}
'''


@pytest.fixture
def served(make_server: ServerFactory, runtime_site: Path) -> Iterator[DevServer]:
    yield make_server(runtime_site=runtime_site)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Six objects, three distinct contents: a = b = c, d = e, f."""
    root = tmp_path / "store"
    (root / "in").mkdir(parents=True)
    for name, data in {"a": b"same bytes", "b": b"same bytes", "c": b"same bytes",
                       "d": b"other", "e": b"other", "f": b"third content"}.items():
        (root / "in" / f"{name}.bin").write_bytes(data)
    return root


def env_of(served: DevServer, tmp_path: Path, store: Path) -> dict[str, str]:
    env = {**environment(served, tmp_path), "OWDEDUP_STORE": f"file://{store}"}
    del env["OWDEDUP_STORE_ACCESS_KEY"], env["OWDEDUP_STORE_SECRET_KEY"]
    return env


def wrapped(served: DevServer, tmp_path: Path, store: Path, *args: str) -> dict[str, str]:
    env = env_of(served, tmp_path, store)
    code, output = wrap(env, "myfunction", "--ignore", "root,dest_bucket", *args)
    assert code == 0, output
    return env


def runs_of(client: Client, name: str) -> int:
    return len(client.request("GET", f"activations?name={name}&limit=200").json)


def map_wrapped(env: dict[str, str], store: Path, out: Path, *extra: str) -> tuple[int, str,
                                                                                list[Any]]:
    result = CliRunner().invoke(app, [
        "map", "myfunction-dedup", "in", "out", "--platform", "openwhisk", "--quiet",
        "--param", f"root={store}", "--results", str(out), *extra], env=env)
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return result.exit_code, result.output, lines


def test_each_distinct_content_is_invoked_once_a_rerun_invokes_nothing_an_update_misses(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    client = Client(served.url)
    client.action("myfunction", CODE)
    env = wrapped(served, tmp_path, store)

    code, output, lines = map_wrapped(env, store, tmp_path / "first.jsonl")
    assert code == 0, output
    assert runs_of(client, "myfunction") == 3  # a=b=c, d=e, f: one run per content
    assert [line["key"] for line in lines] == [f"{n}.bin" for n in "abcdef"]
    by_key = {line["key"]: line for line in lines}
    assert [by_key[f"{n}.bin"]["status"] for n in "abcdef"] == [
        "computed", "deduplicated", "deduplicated", "computed", "deduplicated", "computed"]
    assert by_key["c.bin"]["result"]["length"] == 10 and by_key["e.bin"]["result"]["length"] == 5
    assert by_key["a.bin"]["result"]["owdedup"]["hit"] is False
    assert "invocations made" in output

    conductor_runs = runs_of(client, "myfunction-dedup")
    code, output, lines = map_wrapped(env, store, tmp_path / "second.jsonl")
    assert code == 0, output
    assert runs_of(client, "myfunction-dedup") == conductor_runs  # nothing invoked at all
    assert runs_of(client, "myfunction") == 3
    assert {line["status"] for line in lines} == {"deduplicated"}
    assert lines[0]["result"]["owdedup"]["hit"] is True
    assert lines[0]["result"]["owdedup"]["activation"] == by_key["a.bin"]["result"][
        "owdedup"]["activation"]

    client.action("myfunction", CODE + "# v2\n")  # a new version of the wrapped action
    code, output, lines = map_wrapped(env, store, tmp_path / "third.jsonl")
    assert code == 0, output
    assert runs_of(client, "myfunction") == 6
    assert [line["status"] for line in lines].count("computed") == 3


def test_the_client_keys_a_call_as_the_conductor_records_it(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    """A call the conductor recorded is found under the client's key; another value of a
    parameter that is not ignored is another key."""
    client = Client(served.url)
    client.action("myfunction", CODE)
    env = wrapped(served, tmp_path, store)
    reply = client.invoke("myfunction-dedup", {"bucket": "in", "key": "a.bin", "factor": "2",
                                               "root": str(store), "dest_bucket": "out"},
                          result=True)
    assert reply.status == 200 and reply.json["owdedup"]["hit"] is False, reply.raw

    ow = OpenWhiskClient(Credentials(served.url, AUTH))
    try:
        target = WrappedTarget.read(ow, "myfunction-dedup")
    finally:
        ow.close()
    assert target.config.action == "myfunction"
    assert env["OWDEDUP_RECORDS"].endswith(str(target.config.settings.records_url)
                                           .split("://", 1)[1])
    fingerprint = target.fingerprint()
    context = Context(target.config.settings)
    try:
        for key in ("a.bin", "b.bin"):  # the same content under another name
            params = target.call_params(key, "in", "elsewhere", {"factor": "2",
                                                                 "root": str(store)})
            record = find_result(target.key(params, fingerprint, context), context.records,
                                 context.store)
            assert record is not None and record.result is not None
            assert record.result["length"] == 10 and record.activation == reply.json[
                "owdedup"]["activation"]
        other = target.call_params("a.bin", "in", "out", {"factor": "3", "root": str(store)})
        assert find_result(target.key(other, fingerprint, context), context.records,
                           context.store) is None
    finally:
        context.close()

    # The command's own keys: the content the conductor recorded is not invoked again.
    code, output, lines = map_wrapped(env, store, tmp_path / "r.jsonl", "--param", "factor=2")
    assert code == 0, output
    assert runs_of(client, "myfunction") == 3  # 1 direct + d=e and f; a=b=c was recorded
    assert [line["status"] for line in lines[:3]] == ["deduplicated"] * 3
    assert lines[0]["result"]["owdedup"]["activation"] == reply.json["owdedup"]["activation"]


def test_a_failing_object_is_named_and_not_recorded_and_the_rest_go_on(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    (store / "in" / "g.bin").write_bytes(b"bad input")
    client = Client(served.url)
    client.action("myfunction", CODE)
    env = wrapped(served, tmp_path, store)
    code, output, lines = map_wrapped(env, store, tmp_path / "r.jsonl")
    assert code == 1, output
    failed = [line for line in lines if line["status"] == "failed"]
    assert [line["key"] for line in failed] == ["g.bin"]
    assert failed[0]["error"] == "g.bin: cannot count g.bin"
    assert len(lines) == 7 and runs_of(client, "myfunction") == 4
    code, _, lines = map_wrapped(env, store, tmp_path / "again.jsonl")
    assert code == 1 and runs_of(client, "myfunction") == 5  # only the failed one again


@pytest.mark.parametrize("name, expected", [
    ("nothing-dedup", "nothing-dedup: no such function nor action"),
    ("myfunction", "myfunction is an action but not a conductor made by owdedup wrap"),
])
def test_what_is_not_a_wrapped_action_is_refused_with_its_name(
    served: DevServer, tmp_path: Path, store: Path, name: str, expected: str
) -> None:
    client = Client(served.url)
    client.action("myfunction", CODE)
    env = env_of(served, tmp_path, store)
    result = CliRunner().invoke(app, ["map", name, "in", "out", "--platform", "openwhisk",
                                      "--quiet"], env=env)
    output = result.output + (result.stderr if result.stderr_bytes else "")
    assert result.exit_code != 0 and expected in output, output
    assert runs_of(client, "myfunction") == 0


def test_a_param_the_source_fills_or_a_reserved_one_is_refused(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    client = Client(served.url)
    client.action("myfunction", CODE)
    env = wrapped(served, tmp_path, store)
    for param, expected in (("key=x", "given by SOURCE"),
                            ("owdedup_action=other", "the owdedup_* names")):
        code, output, _ = map_wrapped(env, store, tmp_path / "r.jsonl", "--param", param)
        assert code != 0 and expected in output, output
    assert runs_of(client, "myfunction-dedup") == 0


def test_objects_go_as_the_declared_reference_and_dest_can_be_left_out(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    """``owdedup wrap --objects src_bucket/src_key``: each object goes as those parameters;
    DEST ``-`` passes no dest_bucket (a parameter that is not ignored would be keyed)."""
    client = Client(served.url)
    client.action("myfunction", '''
from pathlib import Path

def main(params):
    assert "bucket" not in params and "dest_bucket" not in params, params
    return {"length": len(Path(params["root"], params["src_bucket"],
                               params["src_key"]).read_bytes())}
''')
    env = env_of(served, tmp_path, store)
    code, output = wrap(env, "myfunction", "--objects", "src_bucket/src_key", "--ignore", "root")
    assert code == 0, output
    result = CliRunner().invoke(app, [
        "map", "myfunction-dedup", "in", "-", "--platform", "openwhisk", "--quiet",
        "--param", f"root={store}", "--results", str(tmp_path / "r.jsonl")], env=env)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [line["result"]["length"] for line in lines] == [10, 10, 10, 5, 5, 13]
    assert runs_of(client, "myfunction") == 3
