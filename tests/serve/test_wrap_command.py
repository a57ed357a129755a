"""``owdedup wrap`` against ``owdedup serve``: the conductor is created with the annotations
and bound configuration OpenWhisk needs, and no credential is printed (issue 10)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from owdedup.cli import app
from owdedup.serve.catalog import kv_dict
from owdedup.serve.server import DevServer
from tests.conftest import PROJECT
from tests.serve.conftest import AUTH, Client, ServerFactory

SECRET = "minio-Secret-Key-never-printed"
CODE = "def main(params):\n    return {'n': len(params)}\n"


def environment(server: DevServer, tmp_path: Path) -> dict[str, str]:
    return {
        "OW_APIHOST": server.url, "OW_AUTH": AUTH, "OW_NAMESPACE": "_",
        "WSK_CONFIG_FILE": str(tmp_path / "none"),
        "OWDEDUP_STORE": "http://127.0.0.1:9000", "OWDEDUP_STORE_ACCESS_KEY": "minio",
        "OWDEDUP_STORE_SECRET_KEY": SECRET,
        "OWDEDUP_RECORDS": f"sqlite://{tmp_path / 'records.sqlite'}",
    }


def wrap(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["wrap", *args, "--project", str(PROJECT)], env=env)
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_wrap_creates_the_conductor_with_its_annotations_and_bound_configuration(
    server: DevServer, client: Client, tmp_path: Path
) -> None:
    client.action("myfunction", CODE)
    env = environment(server, tmp_path)
    code, output = wrap(env, "myfunction", "--objects", "src_bucket/src_key",
                        "--ignore", "dest_bucket,token", "--no-metadata")
    assert code == 0, output
    assert SECRET not in output
    reply = client.request("GET", "actions/myfunction-dedup")
    assert reply.status == 200
    action = reply.json
    annotations = kv_dict(action["annotations"])
    assert annotations["conductor"] is True and annotations["provide-api-key"] is True
    assert annotations["final"] is True
    assert action["exec"]["kind"] == "python:3.11" and action["exec"]["binary"] is True
    bound = kv_dict(action["parameters"])
    assert bound["owdedup_action"] == "myfunction"
    assert bound["owdedup_objects"] == "src_bucket/src_key"
    assert bound["owdedup_ignore"] == "dest_bucket,token"
    assert bound["owdedup_no_metadata"] == "true"
    assert bound["owdedup_store"] == "http://127.0.0.1:9000"
    assert bound["owdedup_store_secret_key"] == SECRET  # bound, as deploy binds them
    assert all(key.startswith("owdedup_") for key in bound)
    # final: an invoker cannot point the conductor at other records or another action
    refused = client.invoke("myfunction-dedup", {"owdedup_action": "other"})
    assert refused.status == 400


def test_dry_run_shows_the_plan_without_secrets_and_creates_nothing(
    server: DevServer, client: Client, tmp_path: Path
) -> None:
    client.action("myfunction", CODE)
    code, output = wrap(environment(server, tmp_path), "myfunction", "--version", "7",
                        "--dry-run")
    assert code == 0, output
    assert "myfunction-dedup" in output and "conductor: true" in output
    assert "owdedup_store_secret_key=<set>" in output and SECRET not in output
    assert "owdedup_version=7" in output
    assert client.request("GET", "actions/myfunction-dedup").status == 404


@pytest.mark.parametrize("args, expected", [
    (("nothing",), "the action nothing does not exist"),
    (("myfunction", "--objects", "bucket"), "BUCKET_PARAM/KEY_PARAM"),
])
def test_bad_wraps_are_refused_and_create_nothing(
    server: DevServer, client: Client, tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    client.action("myfunction", CODE)
    code, output = wrap(environment(server, tmp_path), *args)
    assert code == 1 and expected in output
    assert client.request("GET", "actions/nothing-dedup").status == 404
    assert client.request("GET", "actions/myfunction-dedup").status == 404


def test_wrap_needs_the_stores(server: DevServer, tmp_path: Path) -> None:
    env = {k: v for k, v in environment(server, tmp_path).items() if k != "OWDEDUP_RECORDS"}
    code, output = wrap(env, "myfunction")
    assert code == 1 and "OWDEDUP_RECORDS" in output


def test_the_created_conductor_runs_under_serve_and_reads_the_wrapped_definition(
    make_server: ServerFactory, runtime_site: Path, tmp_path: Path
) -> None:
    """Run by serve's runtime as OpenWhisk would run it (the API key given through
    provide-api-key): the wrapped action's definition is read over REST, and a miss runs the
    wrapped action."""
    server = make_server(runtime_site=runtime_site)  # the runtime image's own packages
    client = Client(server.url)
    store = tmp_path / "store"
    (store / "photos").mkdir(parents=True)
    (store / "photos" / "a.jpg").write_bytes(b"bytes")
    client.action("myfunction", CODE)
    env = {**environment(server, tmp_path), "OWDEDUP_STORE": f"file://{store}"}
    del env["OWDEDUP_STORE_ACCESS_KEY"], env["OWDEDUP_STORE_SECRET_KEY"]
    code, output = wrap(env, "myfunction", "--ignore", "dest_bucket")
    assert code == 0, output
    reply = client.invoke("myfunction-dedup", {"bucket": "photos", "key": "a.jpg",
                                               "dest_bucket": "out"}, result=True)
    assert reply.status == 200, reply.raw
    result = reply.json
    # serve runs conductors as OpenWhisk does: the wrapped action ran, its result came back
    assert result["n"] == 3 and result["owdedup"]["hit"] is False


def test_outside_the_project_the_installed_conductor_is_built_into_the_cache(
    server: DevServer, client: Client, tmp_path: Path
) -> None:
    client.action("myfunction", CODE)
    env = {**environment(server, tmp_path), "OWDEDUP_DEPLOY_CACHE": str(tmp_path / "cache")}
    result = CliRunner().invoke(app, ["wrap", "myfunction", "--dry-run",
                                      "--project", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    assert f"build {tmp_path / 'cache' / 'conductor' / 'dedup.zip'}" in result.output
