"""``deploy.sh`` onto ``owdedup serve`` wired to the real MinIO, Kafka and CouchDB-API server.

The server runs as ``owdedup serve`` in a subprocess (key from the environment, not its
command line), with a stand-in for the runtime image's site-packages; ``deploy.sh`` deploys
the manifest with the real wskdeploy, Kafka feed trigger included, using the services'
variables. Then:

- the deployed sequence, invoked through the REST API, computes, then deduplicates, and
  refuses a bad object with a 502 naming it, exactly as the local executor does for the same
  objects (same status, output keys, digest), in both orders;
- an upload to MinIO alone ends as a thumbnail and a record: MinIO -> Kafka -> feed ->
  trigger -> rule -> dispatch -> sequence, with no command in between.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.errors import OwdedupError
from owdedup.runtime.records import Record
from owdedup.services.config import ServicesConfig
from owdedup.services.install import (
    install_openwhisk_js,
    openwhisk_js_dir,
)
from tests.deploying import (
    copy_project,
    entities,
    run_deploy_sh,
    serve_process,
    thumbnail_output,
)
from tests.imagegen import jpeg, not_an_image
from tests.serve.conftest import AUTH, Client
from tests.service_fixtures import PROJECT, Services
from tests.tooling import real_wsk, real_wskdeploy, wait_until

SIZE = 64
PACKAGE, SEQUENCE = "owdedup", "dedup-thumbnail"
ACTIONS = ("hash", "lookup", "thumbnail", "record", "dispatch")
REST_BUCKET = "owdedup-rest-inputs"


@dataclass
class Deployed:
    client: Client
    env: dict[str, str]
    project: Path
    deploy_output: str


@pytest.fixture(scope="module")
def deployed(services: Services, runtime_site: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    wskdeploy = real_wskdeploy()
    root = tmp_path_factory.mktemp("deploy-serve")
    with serve_process(root, AUTH, runtime_site) as client:
        project = copy_project(root / "project")
        env = {**os.environ, **services.env, "OW_APIHOST": client.url, "OW_AUTH": AUTH,
               "OWDEDUP_SIZES": str(SIZE), "OWDEDUP_PYTHON": sys.executable,
               "WSKDEPLOY": str(wskdeploy)}
        for name in ("OW_NAMESPACE", "WSK_CONFIG_FILE", "OWDEDUP_FORMAT", "OWDEDUP_QUALITY"):
            env.pop(name, None)
        done = run_deploy_sh(project, env)
        assert done.returncode == 0, done.stdout + done.stderr + (root / "serve.log").read_text()
        yield Deployed(client, env, project, done.stdout + done.stderr)


@pytest.fixture
def context(services: Services) -> Iterator[Context]:
    ctx = Context(Settings.resolve({}, services.env))
    yield ctx
    ctx.close()


def rest_invoke(deployed: Deployed, bucket: str, key: str) -> tuple[int, dict[str, Any]]:
    reply = deployed.client.invoke(f"{PACKAGE}/{SEQUENCE}", {"bucket": bucket, "key": key},
                                   blocking=True, result=True)
    return reply.status, reply.json


def local_invoke(deployed: Deployed, bucket: str, key: str,
                 tmp: Path) -> tuple[int, dict[str, Any]]:
    """The same sequence through the local executor (``owdedup invoke``)."""
    done = subprocess.run(
        [sys.executable, "-m", "owdedup", "invoke", "thumbnail", f"{bucket}/{key}",
         deployed.env["OWDEDUP_OUT_BUCKET"], "--size", str(SIZE), "--manifest",
         str(PROJECT / "manifest.yaml")],
        cwd=tmp, env=deployed.env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert deployed.env["OWDEDUP_STORE_SECRET_KEY"] not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What must agree between OpenWhisk and the local executor."""
    return {"status": result.get("status"), "digest": result.get("digest"),
            "outputs": sorted((o["bucket"], o["key"], o["size"])
                              for o in result.get("outputs", []))}


def expected_key(data: bytes) -> tuple[str, str]:
    """(function identity, output key) of the one thumbnail deploy.sh's binding makes."""
    return thumbnail_output(data, {"sizes": str(SIZE)})


def test_deploy_creates_exactly_the_manifest(deployed: Deployed) -> None:
    assert "Deployment completed successfully" in deployed.deploy_output
    assert entities(deployed.client) == {
        "packages": {PACKAGE},
        "actions": {f"{PACKAGE}/{a}" for a in (*ACTIONS, SEQUENCE)},
        "triggers": {"image-uploaded", "image-uploaded-webhook"},
        "rules": {"on-image-uploaded", "on-image-uploaded-webhook"},
    }
    trigger = deployed.client.request("GET", "triggers/image-uploaded").json
    annotations = {a["key"]: a["value"] for a in trigger["annotations"]}
    assert annotations["feed"] == "/whisk.system/messaging/kafkaFeed"


def test_rest_invocations_match_the_local_executor(
    deployed: Deployed, context: Context, tmp_path: Path
) -> None:
    # A bucket that sends no events: the feed must not race these invocations.
    inb, outb = REST_BUCKET, deployed.env["OWDEDUP_OUT_BUCKET"]
    context.store.ensure_bucket(inb)
    run = uuid.uuid4().hex[:8]
    first = jpeg(257, 190)
    context.store.put(inb, f"rest-{run}/a.jpg", first)
    _, out_key = expected_key(first)

    status, computed = rest_invoke(deployed, inb, f"rest-{run}/a.jpg")
    assert status == 200, computed
    assert computed["status"] == "computed" and computed["recorded"] is True
    assert [o["key"] for o in computed["outputs"]] == [out_key]
    assert context.store.exists(outb, out_key)
    assert not any(k.startswith(("store", "records")) for k in computed)  # no config echoed
    status, again = rest_invoke(deployed, inb, f"rest-{run}/a.jpg")
    assert status == 200 and again["status"] == "deduplicated"
    code, local = local_invoke(deployed, inb, f"rest-{run}/a.jpg", tmp_path)
    assert code == 0 and summary(local) == summary(again)
    assert summary(again)["outputs"] == summary(computed)["outputs"]

    # the other way round: computed locally, deduplicated on OpenWhisk
    second = jpeg(258, 191)
    context.store.put(inb, f"rest-{run}/b.jpg", second)
    code, local = local_invoke(deployed, inb, f"rest-{run}/b.jpg", tmp_path)
    assert code == 0 and local["status"] == "computed"
    status, remote = rest_invoke(deployed, inb, f"rest-{run}/b.jpg")
    assert status == 200 and remote["status"] == "deduplicated"
    assert summary(remote)["outputs"] == summary(local)["outputs"]

    # a bad object: an application error naming the key, a 502, like the local error
    context.store.put(inb, f"rest-{run}/notes.jpg", not_an_image())
    status, bad = rest_invoke(deployed, inb, f"rest-{run}/notes.jpg")
    assert status == 502, bad
    assert f"rest-{run}/notes.jpg" in bad["error"] and "not an image" in bad["error"]
    code, local = local_invoke(deployed, inb, f"rest-{run}/notes.jpg", tmp_path)
    assert code == 1
    assert (bad["error"], bad["error_kind"]) == (local["error"], local["error_kind"])


def js_invoke(deployed: Deployed, bucket: str, key: str) -> dict[str, Any]:
    """The sequence invoked through Apache's JavaScript client (``openwhisk`` on npm): kept
    beside ``wsk`` for a program's view of an invoke (``ok``, the HTTP status, the error
    object)."""
    config = ServicesConfig.from_env()
    install_openwhisk_js(config)
    done = subprocess.run(
        ["node", str(PROJECT / "lib" / "owdedup" / "deploy" / "ow_invoke.js"),
         f"{PACKAGE}/{SEQUENCE}", json.dumps({"bucket": bucket, "key": key})],
        env={**os.environ, "NODE_PATH": str(openwhisk_js_dir(config) / "node_modules"),
             "__OW_API_HOST": deployed.client.url, "__OW_API_KEY": AUTH},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


def test_the_javascript_client_gets_what_the_local_executor_gets(
    deployed: Deployed, context: Context, tmp_path: Path
) -> None:
    inb = REST_BUCKET
    context.store.ensure_bucket(inb)
    run = uuid.uuid4().hex[:8]
    context.store.put(inb, f"js-{run}/a.jpg", jpeg(259, 192))
    first = js_invoke(deployed, inb, f"js-{run}/a.jpg")
    assert first["ok"] and first["result"]["status"] == "computed"
    again = js_invoke(deployed, inb, f"js-{run}/a.jpg")
    assert again["ok"] and again["result"]["status"] == "deduplicated"
    code, local = local_invoke(deployed, inb, f"js-{run}/a.jpg", tmp_path)
    assert code == 0 and summary(local) == summary(again["result"])
    context.store.put(inb, f"js-{run}/notes.jpg", not_an_image())
    bad = js_invoke(deployed, inb, f"js-{run}/notes.jpg")
    assert not bad["ok"] and bad["status"] == 502
    code, local = local_invoke(deployed, inb, f"js-{run}/notes.jpg", tmp_path)
    assert code == 1 and bad["error"]["error"] == local["error"]
    assert f"js-{run}/notes.jpg" in bad["error"]["error"]


def wsk_invoke(deployed: Deployed, bucket: str, key: str,
               home: Path) -> subprocess.CompletedProcess[str]:
    """The sequence invoked as a user does, with the real ``wsk`` CLI (key in a 0600
    properties file, never on the command line)."""
    props = home / "wskprops"
    if not props.exists():
        props.touch(mode=0o600)
        props.write_text(f"APIHOST={deployed.client.url}\nAUTH={AUTH}\n")
    return subprocess.run(
        [str(real_wsk()), "action", "invoke", f"{PACKAGE}/{SEQUENCE}", "-p", "bucket", bucket,
         "-p", "key", key, "-r"],
        env={"WSK_CONFIG_FILE": str(props), "HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300, check=False,
    )


def test_wsk_gets_what_the_local_executor_gets(
    deployed: Deployed, context: Context, tmp_path: Path
) -> None:
    inb = REST_BUCKET
    context.store.ensure_bucket(inb)
    run = uuid.uuid4().hex[:8]
    context.store.put(inb, f"wsk-{run}/a.jpg", jpeg(260, 193))
    first = wsk_invoke(deployed, inb, f"wsk-{run}/a.jpg", tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["status"] == "computed"
    again = wsk_invoke(deployed, inb, f"wsk-{run}/a.jpg", tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "deduplicated"
    code, local = local_invoke(deployed, inb, f"wsk-{run}/a.jpg", tmp_path)
    assert code == 0 and summary(local) == summary(json.loads(again.stdout))
    context.store.put(inb, f"wsk-{run}/notes.jpg", not_an_image())
    bad = wsk_invoke(deployed, inb, f"wsk-{run}/notes.jpg", tmp_path)
    assert bad.returncode != 0  # wsk reports the application error, on stderr with -r
    error = json.loads(bad.stderr)["error"]
    assert f"wsk-{run}/notes.jpg" in error and "not an image" in error
    assert AUTH not in bad.stdout + bad.stderr


def test_an_upload_alone_ends_as_a_thumbnail_and_a_record(
    deployed: Deployed, context: Context
) -> None:
    inb, outb = deployed.env["OWDEDUP_IN_BUCKET"], deployed.env["OWDEDUP_OUT_BUCKET"]
    data = jpeg(301, 222)
    function_id, out_key = expected_key(data)
    digest = hashlib.sha256(data).hexdigest()
    context.store.put(inb, f"feed-{uuid.uuid4().hex[:8]}/upload me.jpg", data)

    def recorded() -> Record | None:
        record = context.records.get(function_id, digest)
        return record if record is not None and context.store.exists(outb, out_key) else None

    record = wait_until(recorded, timeout=120, what="the thumbnail and its record",
                        ignore=(OwdedupError,))
    assert record.output.key == out_key
    runs = deployed.client.request("GET", "activations?name=dispatch&docs=true").json
    invoked = [entry for run in runs for entry in run["response"]["result"].get("invoked", [])]
    assert any(entry["key"].endswith("/upload me.jpg") for entry in invoked)


def activations_of(deployed: Deployed, name: str, marker: str) -> list[dict[str, Any]]:
    """The recorded activations of *name* whose result mentions *marker*."""
    runs = deployed.client.request("GET", f"activations?name={name}&docs=true&limit=200").json
    return [run for run in runs if marker in json.dumps(run["response"]["result"])]


def test_eight_simultaneous_uploads_of_new_content_compute_once(
    deployed: Deployed, context: Context
) -> None:
    """Issue 11, item 1, through the platform: eight uploads of one new content, MinIO ->
    Kafka -> feed -> dispatch -> eight sequences at once. One computes; the others wait for
    its lease (or find its record): one computation, one record, no lease left, and every
    sequence ends with the result."""
    inb, outb = deployed.env["OWDEDUP_IN_BUCKET"], deployed.env["OWDEDUP_OUT_BUCKET"]
    data = jpeg(1600, 1200)  # big enough that the eight overlap the computation
    function_id, out_key = expected_key(data)
    digest = hashlib.sha256(data).hexdigest()
    marker = f"burst-{uuid.uuid4().hex[:8]}/"
    for i in range(8):
        context.store.put(inb, f"{marker}copy {i}.jpg", data)

    def all_ended() -> list[dict[str, Any]] | None:
        ended = activations_of(deployed, SEQUENCE, marker)
        return ended if len(ended) >= 8 else None

    ended = wait_until(all_ended, timeout=180, what="the eight sequences to end")
    assert len(ended) == 8, ended  # one sequence per upload, never more
    assert sorted(run["response"]["result"]["key"] for run in ended) == [
        f"{marker}copy {i}.jpg" for i in range(8)]
    for run in ended:
        result = run["response"]["result"]
        assert run["response"]["success"], result
        assert [o["key"] for o in result["outputs"]] == [out_key], result
    statuses = sorted(run["response"]["result"]["status"] for run in ended)
    assert statuses == ["computed"] + ["deduplicated"] * 7
    computed = [run for run in activations_of(deployed, "thumbnail", marker)
                if run["response"]["result"].get("status") == "computed"]
    assert len(computed) == 1  # the thumbnail action computed once, for all eight
    record = context.records.get(function_id, digest)
    assert record is not None and record.failure is None and record.output.key == out_key
    assert context.records.get_lease(function_id, digest) is None
    assert context.store.exists(outb, out_key)


def sequence_activations(deployed: Deployed) -> set[str]:
    listed = deployed.client.request("GET", f"activations?name={SEQUENCE}&limit=200").json
    return {entry["activationId"] for entry in listed}


def platform_map(deployed: Deployed, bucket: str, tmp: Path) -> tuple[int, list[dict[str, Any]],
                                                                     str]:
    results = tmp / f"results-{uuid.uuid4().hex[:6]}.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "owdedup", "map", "thumbnail", bucket,
         deployed.env["OWDEDUP_OUT_BUCKET"], "--platform", "openwhisk", "--size", str(SIZE),
         "--window", "3", "--results", str(results), "--quiet"],
        cwd=tmp, env=deployed.env, capture_output=True, text=True, timeout=600, check=False,
    )
    lines = [json.loads(line) for line in results.read_text().splitlines()] \
        if results.exists() else []
    return done.returncode, lines, done.stdout + done.stderr


def test_map_on_openwhisk_invokes_each_missing_content_once(
    deployed: Deployed, context: Context, tmp_path: Path
) -> None:
    bucket = f"owdedup-fanout-{uuid.uuid4().hex[:8]}"
    context.store.ensure_bucket(bucket)
    photos = {f"p{i}.jpg": jpeg(200 + i, 150 + i) for i in range(5)}
    photos |= {"copy-of-p0.jpg": photos["p0.jpg"], "again/p1.jpg": photos["p1.jpg"],
               # bad content of its own: a refusal is recorded by content (issue 11), and
               # other tests of this module refuse the plain not_an_image()
               "notes.jpg": not_an_image() + bucket.encode()}
    for key, data in photos.items():
        context.store.put(bucket, key, data)
    before = sequence_activations(deployed)

    code, lines, output = platform_map(deployed, bucket, tmp_path)
    assert code == 1, output  # one object failed
    status = {line["key"]: line["status"] for line in lines}
    assert status.pop("notes.jpg") == "failed" and len(status) == 7, output
    # Of each content, the first name in listing order computes; its twin shares the result.
    assert [status.pop(k) for k in ("again/p1.jpg", "p1.jpg")] == ["computed", "deduplicated"]
    assert [status.pop(k) for k in ("copy-of-p0.jpg", "p0.jpg")] == ["computed", "deduplicated"]
    assert set(status.values()) == {"computed"}
    bad = next(line for line in lines if line["key"] == "notes.jpg")
    assert "notes.jpg" in bad["error"] and "not an image" in bad["error"]
    made = sequence_activations(deployed) - before
    assert len(made) == 6  # five distinct photos and the bad object; duplicates never invoked
    for key in ("p0.jpg", "copy-of-p0.jpg"):
        _, out_key = expected_key(photos[key])
        (line,) = [entry for entry in lines if entry["key"] == key]
        assert [o["key"] for o in line["outputs"]] == [out_key]
        assert context.store.exists(deployed.env["OWDEDUP_OUT_BUCKET"], out_key)
    assert deployed.env["OWDEDUP_STORE_SECRET_KEY"] not in output + json.dumps(lines)

    # The re-run answers every object here, the refused one from its negative record:
    # nothing is invoked; --retry-failed judges the refused one again.
    before = sequence_activations(deployed)
    code, lines, output = platform_map(deployed, bucket, tmp_path)
    assert code == 1, output
    assert {line["key"]: line["status"] for line in lines} == {
        **{key: "deduplicated" for key in photos if key != "notes.jpg"}, "notes.jpg": "failed"}
    again = next(line for line in lines if line["key"] == "notes.jpg")
    assert "not an image" in again["error"] and again.get("recorded_failure") is True, again
    assert len(sequence_activations(deployed) - before) == 0


def test_a_redeploy_without_the_feed_deletes_its_trigger_rule_and_registration(
    deployed: Deployed,
) -> None:
    """The issue: a redeploy with --no-kafka-feed left the feed trigger behind. Now the record
    of the first deployment says it is there and the new plan has it not: the rule goes, the
    feed is told (lifecycleEvent DELETE, as ``wsk trigger delete`` does), the trigger goes."""
    done = run_deploy_sh(deployed.project, deployed.env, "--no-kafka-feed")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deleted trigger image-uploaded (feed /whisk.system/messaging/kafkaFeed)" in (
        done.stdout)
    assert entities(deployed.client) == {
        "packages": {PACKAGE},
        "actions": {f"{PACKAGE}/{a}" for a in (*ACTIONS, SEQUENCE)},
        "triggers": {"image-uploaded-webhook"},
        "rules": {"on-image-uploaded-webhook"},
    }
    runs = deployed.client.request("GET", "activations?name=kafkaFeed&docs=true&limit=50").json
    deletes = [run for run in runs
               if run["response"]["result"].get("message") == "deleted trigger"]
    assert deletes and deletes[0]["response"]["success"], runs
    read = deployed.client.request(
        "POST", f"{deployed.client.url}/api/v1/namespaces/whisk.system/actions/messaging/"
        "kafkaFeed?blocking=true",
        {"lifecycleEvent": "READ", "triggerName": "/_/image-uploaded", "authKey": AUTH},
        absolute=True).json
    assert "has no Kafka feed" in read["response"]["result"]["error"]


def test_undeploy_removes_everything(deployed: Deployed) -> None:
    env = {k: v for k, v in deployed.env.items()
           if not k.startswith("OWDEDUP_") or k == "OWDEDUP_PYTHON"}
    done = run_deploy_sh(deployed.project, env, "undeploy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert entities(deployed.client) == {"packages": set(), "actions": set(),
                                         "triggers": set(), "rules": set()}
