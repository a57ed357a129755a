"""``deploy.sh`` with the real wskdeploy against ``owdedup serve`` (in this process, free port).

Each test runs ``deploy.sh`` from a copy of the project (deploy.sh, manifest.yaml, actions/),
so "nothing was built" can be checked, with an environment of its own (``HOME`` without a
``.wskprops``) and made-up credentials that must never show in its output. Between the checks
on what the server holds, nothing else talks to it.

The Kafka feed trigger needs a broker: here it only meets an unreachable one (what wskdeploy
then does is asserted as observed); the full deployment with a real broker, and the events
flowing through it, are in ``tests/services/test_deploy_serve.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from owdedup.deploy import build, plan
from owdedup.deploy.deployed import Entity
from owdedup.deploy.executor import DeployError, Rest
from owdedup.runtime.records import open_records
from owdedup.serve.server import DevServer, ServeConfig
from tests import tooling
from tests.conftest import PROJECT
from tests.deploying import copy_project, entities, run_deploy_sh, thumbnail_output
from tests.imagegen import jpeg
from tests.serve.conftest import AUTH, Client
from tests.unit.test_events import minio_event

PACKAGE = "owdedup"
ACTIONS = ("hash", "lookup", "thumbnail", "record", "dispatch")
SEQUENCE = "dedup-thumbnail"
FEED_TRIGGER, WEBHOOK_TRIGGER = "image-uploaded", "image-uploaded-webhook"
FEED_RULE, WEBHOOK_RULE = "on-image-uploaded", "on-image-uploaded-webhook"
SIZE = 64
#: The credentials the project's environment sets (checked never to be recorded).
SECRET_VARIABLES_SET = ("OWDEDUP_STORE_ACCESS_KEY", "OWDEDUP_STORE_SECRET_KEY",
                        "OWDEDUP_RECORDS_PASSWORD")

#: Records argv, environment and the --config file of every wskdeploy run, then runs it.
RECORDER = """#!/usr/bin/env python3
import json, os, stat, sys
config = sys.argv[sys.argv.index("--config") + 1] if "--config" in sys.argv else None
entry = {"argv": sys.argv[1:], "config": config,
         "config_mode": stat.S_IMODE(os.stat(config).st_mode) if config else None,
         "config_text": open(config).read() if config else None,
         "secret_env": os.environ.get("OWDEDUP_STORE_SECRET_KEY")}
with open(os.environ["RECORD_WSKDEPLOY"], "a") as f:
    f.write(json.dumps(entry) + "\\n")
os.execv(os.environ["REAL_WSKDEPLOY"], [os.environ["REAL_WSKDEPLOY"], *sys.argv[1:]])
"""


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_wskdeploy() -> Path:
    return tooling.real_wskdeploy()


@pytest.fixture
def server(runtime_site: Path) -> Iterator[DevServer]:
    running = DevServer(ServeConfig(auth=AUTH, port=0, runtime_site=runtime_site))
    # The real Kafka feed provider, told to give up on an unreachable broker after its first
    # attempt (~10 s) instead of retrying for 30 s.
    running.feeds.start_timeout_s = 1.0
    running.start()
    yield running
    running.close()


@pytest.fixture
def client(server: DevServer) -> Client:
    return Client(server.url)


@dataclass
class Project:
    root: Path
    store: Path
    records: Path
    env: dict[str, str]
    record_file: Path

    def run(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """deploy.sh in this project, with its environment unless given another."""
        return run_deploy_sh(self.root, self.env if env is None else env, *args,
                             timeout=timeout)

    def wskdeploy_runs(self) -> list[dict[str, Any]]:
        if not self.record_file.exists():
            return []
        return [json.loads(line) for line in self.record_file.read_text().splitlines()]


@pytest.fixture
def project(tmp_path: Path, server: DevServer, real_wskdeploy: Path) -> Project:
    root = copy_project(tmp_path / "project")
    recorder = tmp_path / "bin" / "wskdeploy"
    recorder.parent.mkdir()
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    store = tmp_path / "store"
    (store / "inbucket").mkdir(parents=True)
    (store / "outbucket").mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "TMPDIR": str(tmp_path),
        "LANG": "C.UTF-8",
        "OWDEDUP_PYTHON": sys.executable,
        "OWDEDUP_DEPLOY_CACHE": str(build.default_cache_dir()),  # HOME moved: keep the cache
        "WSKDEPLOY": str(recorder), "REAL_WSKDEPLOY": str(real_wskdeploy),
        "RECORD_WSKDEPLOY": str(tmp_path / "wskdeploy-runs.jsonl"),
        "OW_APIHOST": server.url, "OW_AUTH": AUTH,
        "OWDEDUP_STORE": f"file://{store}",
        "OWDEDUP_RECORDS": f"sqlite://{tmp_path / 'records.sqlite'}",
        # the folder store ignores them; bound all the same, so their path is exercised
        "OWDEDUP_STORE_ACCESS_KEY": "ak-" + secrets.token_hex(8),
        "OWDEDUP_STORE_SECRET_KEY": "sk-" + secrets.token_hex(16),
        "OWDEDUP_RECORDS_PASSWORD": "pw-" + secrets.token_hex(8),
        "OWDEDUP_OUT_BUCKET": "outbucket",
        "OWDEDUP_SIZES": str(SIZE),
        # nothing listens there: the feed's CREATE cannot reach it
        "OWDEDUP_KAFKA": "127.0.0.1:9",
        "OWDEDUP_KAFKA_TOPIC": "uploads",
    }
    return Project(root, store, tmp_path / "records.sqlite", env,
                   tmp_path / "wskdeploy-runs.jsonl")


NOTHING: dict[str, set[str]] = {"packages": set(), "actions": set(), "triggers": set(),
                                "rules": set()}
DEPLOYED_ACTIONS = {f"{PACKAGE}/{a}" for a in (*ACTIONS, SEQUENCE)}


# plan.py: the checks, without a shell ----------------------------------------------------


def test_every_missing_variable_is_listed() -> None:
    result = plan.check({"HOME": "/nonexistent"})
    assert result.target is None
    text = "\n".join(result.problems)
    for name in ("OW_APIHOST", "OW_AUTH", "OWDEDUP_STORE", "OWDEDUP_RECORDS",
                 "OWDEDUP_OUT_BUCKET", "OWDEDUP_KAFKA", "OWDEDUP_KAFKA_TOPIC"):
        assert name in text
    # an S3 store needs its keys; a variable set to "" counts as unset
    env = {"OWDEDUP_STORE": "http://minio:9000", "OWDEDUP_STORE_SECRET_KEY": "  "}
    text = "\n".join(plan.variable_problems(env))
    assert "OWDEDUP_STORE_ACCESS_KEY" in text and "OWDEDUP_STORE_SECRET_KEY" in text
    assert "OWDEDUP_KAFKA" not in "\n".join(plan.variable_problems(env, kafka_feed=False))
    # undeploying needs only the target
    assert plan.check({"OW_APIHOST": "h", "OW_AUTH": "u:k"}, undeploy=True).ok


def test_malformed_settings_are_named_without_their_values() -> None:
    env = {"OW_APIHOST": "https://ow", "OW_AUTH": "no-colon-secret",
           "OWDEDUP_STORE": "http://user:pass-secret@minio:9000", "OWDEDUP_RECORDS": "ftp://x",
           "OWDEDUP_OUT_BUCKET": "out", "OWDEDUP_KAFKA": "kafka", "OWDEDUP_KAFKA_TOPIC": "t",
           "OWDEDUP_FORMAT": "gif"}
    problems = plan.check(env).problems
    text = "\n".join(problems)
    assert "secret" not in text
    assert [p.split(":")[0] for p in problems] == [
        "OW_AUTH", "OWDEDUP_STORE", "OWDEDUP_RECORDS", "OWDEDUP_KAFKA",
        "OWDEDUP_SIZES/FORMAT/QUALITY"]


def test_target_from_wskprops_as_wsk_keeps_it(tmp_path: Path) -> None:
    props = tmp_path / ".wskprops"
    props.write_text("APIHOST=ow.example:443\nAUTH = u:k\nNAMESPACE=team\nBAD=a=b\nCERT=c.pem\n")
    target, problems = plan.resolve_target({"HOME": str(tmp_path)})
    assert not problems and target is not None
    assert (target.apihost, target.auth, target.namespace) == ("ow.example:443", "u:k", "team")
    assert target.extra == {"CERT": "c.pem"}
    assert "u:k" not in repr(target) and "u:k" not in target.describe()
    # variables win, one by one; WSK_CONFIG_FILE names another file
    other = tmp_path / "other.props"
    other.write_text("APIHOST=other:443\nAUTH=v:w\n")
    target, _ = plan.resolve_target({"HOME": str(tmp_path), "WSK_CONFIG_FILE": str(other),
                                     "OW_APIHOST": "http://127.0.0.1:3233"})
    assert target is not None
    assert (target.apihost, target.auth, target.namespace) == ("http://127.0.0.1:3233", "v:w",
                                                               "_")
    assert target.sources["auth"] == f"AUTH= in {other}"


def test_stage_writes_a_private_key_file_and_drops_the_feed(tmp_path: Path) -> None:
    target = plan.Target("http://h", "u:k", "_", {})
    manifest = plan.stage(PROJECT, tmp_path / "s", target, kafka_feed=False, placeholders=True)
    assert stat.S_IMODE((tmp_path / "s" / "wskprops").stat().st_mode) == 0o600
    assert (tmp_path / "s" / "wskprops").read_text() == "APIHOST=http://h\nAUTH=u:k\nNAMESPACE=_\n"
    package = yaml.safe_load(manifest.read_text())["packages"][PACKAGE]
    assert set(package["triggers"]) == {WEBHOOK_TRIGGER}
    assert set(package["rules"]) == {WEBHOOK_RULE}
    assert package["sequences"][SEQUENCE]["actions"] == "hash, lookup, thumbnail, record"
    zips = sorted(p.name for p in (tmp_path / "s" / "build" / "actions").iterdir())
    assert zips == sorted(f"{a}.zip" for a in ACTIONS)


# deploy.sh -------------------------------------------------------------------------------


def test_missing_variables_fail_before_anything_is_built_or_created(
    project: Project, client: Client
) -> None:
    env = {k: v for k, v in project.env.items()
           if k not in ("OW_AUTH", "OWDEDUP_STORE", "OWDEDUP_OUT_BUCKET", "OWDEDUP_KAFKA_TOPIC")}
    done = project.run(env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    for name in ("OW_AUTH", "OWDEDUP_STORE", "OWDEDUP_OUT_BUCKET", "OWDEDUP_KAFKA_TOPIC"):
        assert name in done.stderr
    assert "nothing was built or created" in done.stderr
    assert not (project.root / "build").exists()
    assert project.wskdeploy_runs() == []
    assert entities(client) == NOTHING


def test_dry_run_creates_nothing(project: Project, client: Client) -> None:
    done = project.run("--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "pillow==" in out  # the build plan
    for name in (*ACTIONS, SEQUENCE, FEED_TRIGGER, WEBHOOK_TRIGGER, FEED_RULE, WEBHOOK_RULE):
        assert name in out
    assert 'store_secret_key : "<set>"' in out
    assert "dry run: nothing was built or created" in out
    assert not (project.root / "build").exists()
    assert entities(client) == NOTHING
    (run,) = project.wskdeploy_runs()
    assert "--preview" in run["argv"] and run["secret_env"] == "<set>"


def test_deploy_without_kafka_feed_creates_the_manifest_and_events_flow(
    project: Project, client: Client
) -> None:
    done = project.run("--no-kafka-feed")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Deployment completed successfully" in done.stdout
    assert "thumbnail" in done.stdout and "limits: zip <" in done.stdout  # size report
    assert entities(client) == {
        "packages": {PACKAGE}, "actions": DEPLOYED_ACTIONS,
        "triggers": {WEBHOOK_TRIGGER}, "rules": {WEBHOOK_RULE},
    }

    # the key went through a private file, never the command line
    (run,) = project.wskdeploy_runs()
    assert AUTH not in " ".join(run["argv"]) and "--auth" not in run["argv"]
    assert run["config_mode"] == 0o600 and f"AUTH={AUTH}" in run["config_text"]
    assert not Path(run["config"]).exists()  # removed with the staging folder
    # the services' credentials went through the environment, into the package inputs
    assert run["secret_env"] == project.env["OWDEDUP_STORE_SECRET_KEY"]
    package = client.request("GET", f"packages/{PACKAGE}").json
    params = {p["key"]: p["value"] for p in package["parameters"]}
    assert params["store_secret_key"] == project.env["OWDEDUP_STORE_SECRET_KEY"]
    assert params["records_password"] == project.env["OWDEDUP_RECORDS_PASSWORD"]
    assert params["records_username"] == ""
    assert params["dest_bucket"] == "outbucket" and params["sizes"] == str(SIZE)

    manifest = yaml.safe_load((PROJECT / "manifest.yaml").read_text())["packages"][PACKAGE]
    for name in ACTIONS:
        action = client.request("GET", f"actions/{PACKAGE}/{name}").json
        limits = manifest["actions"][name]["limits"]
        assert action["exec"]["kind"] == "python:3.11"
        assert (action["limits"]["timeout"], action["limits"]["memory"]) == (
            limits["timeout"], limits["memorySize"])
        annotations = {a["key"]: a["value"] for a in action["annotations"]}
        assert annotations["description"] == manifest["actions"][name]["annotations"][
            "description"]
    sequence = client.request("GET", f"actions/{PACKAGE}/{SEQUENCE}").json
    assert [c.rpartition("/")[2] for c in sequence["exec"]["components"]] == [
        "hash", "lookup", "thumbnail", "record"]
    rule = client.request("GET", f"rules/{WEBHOOK_RULE}").json
    assert rule["status"] == "active" and rule["action"]["name"] == "dispatch"

    # MinIO's webhook target: POST the event to the trigger with the key as a Basic token
    data = jpeg(200, 150)
    (project.store / "inbucket" / "a.jpg").write_bytes(data)
    fired = client.request("POST", f"triggers/{WEBHOOK_TRIGGER}",
                           minio_event("a.jpg", size=len(data)))
    assert fired.status == 202, fired.raw
    function_id, out_key = thumbnail_output(data, {"sizes": str(SIZE)})
    tooling.wait_until(lambda: (project.store / "outbucket" / out_key).is_file(), timeout=120,
                       what="the thumbnail from trigger -> rule -> dispatch -> sequence",
                       interval=0.05)

    records = open_records(f"sqlite://{project.records}")
    record = tooling.wait_until(
        lambda: records.get(function_id, hashlib.sha256(data).hexdigest()),
        timeout=30, what="the record", interval=0.05)
    assert record.output.key == out_key
    dispatched = client.request("GET", "activations?name=dispatch&docs=true").json
    assert dispatched[0]["response"]["result"]["objects"] == 1

    # undeploy with the same flags removes it all (and needs none of the services' settings)
    env = {k: v for k, v in project.env.items() if not k.startswith("OWDEDUP_")}
    env["OWDEDUP_PYTHON"] = sys.executable
    done = project.run("--no-kafka-feed", "undeploy", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert entities(client) == NOTHING


def test_unreachable_kafka_fails_the_deployment_as_wskdeploy_does(
    project: Project, client: Client
) -> None:
    """Observed: wskdeploy creates the package, actions and sequence, then the feed trigger
    (PUT, then the feed's CREATE); the CREATE fails, wskdeploy deletes that trigger and stops
    before the rules. Triggers are a Go map, so the webhook trigger may or may not have been
    created first. deploy.sh exits non-zero and says how to clean up; undeploy does."""
    done = project.run()
    assert done.returncode != 0
    assert "cannot reach Kafka at 127.0.0.1:9" in done.stdout + done.stderr
    assert "./deploy.sh undeploy" in done.stderr
    left = entities(client)
    assert left["packages"] == {PACKAGE} and left["actions"] == DEPLOYED_ACTIONS
    assert left["triggers"] <= {WEBHOOK_TRIGGER} and left["rules"] == set()
    done = project.run("undeploy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert entities(client) == NOTHING


def test_a_redeploy_removes_what_the_manifest_dropped_and_undeploy_needs_no_flags(
    project: Project, client: Client
) -> None:
    """The deployment is recorded (per API host and namespace, private, no secret in it), so
    a redeploy deletes what the new plan no longer has (the old deploy.sh left it), and
    ``undeploy`` finds everything without the deploy's flags or settings."""
    done = project.run("--no-kafka-feed")
    assert done.returncode == 0, done.stdout + done.stderr
    (record,) = (project.root / ".owdedup" / "deployed").iterdir()
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    text = record.read_text()
    for name in (*SECRET_VARIABLES_SET, "OW_AUTH"):
        assert project.env[name] not in text, f"{name}'s value in the record"
    saved = json.loads(text)
    assert (saved["apihost"], saved["namespace"], saved["complete"]) == (
        project.env["OW_APIHOST"], "_", True)
    assert {e["name"] for e in saved["entities"] if e["kind"] == "trigger"} == {WEBHOOK_TRIGGER}

    # the webhook trigger and its rule leave the manifest: the redeploy deletes them
    manifest_path = project.root / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    package = manifest["packages"][PACKAGE]
    del package["triggers"][WEBHOOK_TRIGGER], package["rules"][WEBHOOK_RULE]
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    done = project.run("--no-kafka-feed")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"deleted trigger {WEBHOOK_TRIGGER}" in done.stdout
    assert entities(client) == {"packages": {PACKAGE}, "actions": DEPLOYED_ACTIONS,
                                "triggers": set(), "rules": set()}

    env = {k: v for k, v in project.env.items() if not k.startswith("OWDEDUP_")}
    env["OWDEDUP_PYTHON"] = sys.executable
    done = project.run("undeploy", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert entities(client) == NOTHING
    assert not record.exists()


def test_deleting_through_the_rest_api_as_wsk_does(client: Client) -> None:
    """The executor's deletions on owdedup serve: a trigger whose feed refuses (here: it
    never registered) is deleted all the same, with a warning; a package that still holds an
    action is refused with OpenWhisk's conflict, named; what is gone already is no error."""
    rest = Rest(plan.Target(client.url, AUTH, "_", {}))
    assert client.put("triggers/orphan", {"annotations": [
        {"key": "feed", "value": "/whisk.system/messaging/kafkaFeed"}]}).status == 200
    warnings: list[str] = []
    assert rest.delete(Entity("trigger", "orphan", None), warnings.append) is True
    (warning,) = warnings
    assert "did not take back trigger orphan" in warning and "has no Kafka feed" in warning
    assert client.request("GET", "triggers/orphan").status == 404
    assert rest.delete(Entity("trigger", "orphan"), warnings.append) is False  # gone already

    assert client.put("packages/kept", {}).status == 200
    client.action("kept/inside", "def main(args):\n    return args\n")
    with pytest.raises(DeployError, match="cannot delete package kept: HTTP 409 Package not "
                                          "empty"):
        rest.delete(Entity("package", "kept"), warnings.append)
    assert rest.delete(Entity("action", "kept/inside"), warnings.append) is True
    assert rest.delete(Entity("package", "kept"), warnings.append) is True
    assert entities(client) == NOTHING
