"""The package on an OpenWhisk: ``deploy.sh``, the sequence through the REST API, the upload
path, then ``deploy.sh undeploy``.

With ``OWDEDUP_OPENWHISK=1`` it runs against a real OpenWhisk, which needs:

- the target, as ``deploy.sh`` takes it: ``OW_APIHOST`` and ``OW_AUTH``, else ``~/.wskprops``;
- the services in the ``OWDEDUP_*`` variables ``deploy.sh`` binds into the package (``eval
  "$(owdedup services env)"`` for the local ones), at addresses the action containers can
  reach: 127.0.0.1 works only when OpenWhisk runs the actions on this host's network;
- ``OWDEDUP_OPENWHISK_FEED=1`` to also check the upload path (MinIO -> Kafka -> the Kafka feed
  -> trigger -> rule -> sequence), which needs openwhisk-package-kafka's feed provider
  (OpenWhisk standalone has none).

It deploys the package ``owdedup`` into the target namespace, replacing one that is there,
and removes it at the end; its inputs go to the bucket ``owdedup-integration`` (objects under
a per-run prefix, deleted at the end).

Without it (as in CI, where no OpenWhisk runs) the same tests run against the stand-in:
``owdedup serve`` in a process of its own with the session's real MinIO, Kafka and
CouchDB-API server, feed included. So the tier's code is exercised on every run, and what
it proves there is what ``tests/services/test_deploy_serve.py`` proves in more detail.
"""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from owdedup.deploy.plan import resolve_target
from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.errors import OwdedupError
from tests.deploying import copy_project, run_deploy_sh, serve_process, thumbnail_outputs
from tests.imagegen import jpeg, not_an_image
from tests.serve.conftest import AUTH, Client
from tests.service_fixtures import Services
from tests.tooling import real_wskdeploy, wait_until

PACKAGE, SEQUENCE = "owdedup", "dedup-thumbnail"
BUCKET = "owdedup-integration"
#: What deploy.sh needs besides the target (it names any that is missing, too).
SERVICE_VARIABLES = ("OWDEDUP_STORE", "OWDEDUP_STORE_ACCESS_KEY", "OWDEDUP_STORE_SECRET_KEY",
                     "OWDEDUP_RECORDS", "OWDEDUP_IN_BUCKET", "OWDEDUP_OUT_BUCKET",
                     "OWDEDUP_KAFKA", "OWDEDUP_KAFKA_TOPIC")


@dataclass
class OpenWhisk:
    client: Client
    env: dict[str, str]
    context: Context
    run: str  # this run's key prefix
    feed: bool  # whether uploads reach the sequence through the Kafka feed


def _real_target() -> tuple[Client, dict[str, str]]:
    target, problems = resolve_target(os.environ)
    unset = [name for name in SERVICE_VARIABLES if not os.environ.get(name, "").strip()]
    if target is None or unset:
        pytest.fail("OWDEDUP_OPENWHISK=1, but " + "; ".join(
            [*problems, *(f"{name} is not set" for name in unset)]), pytrace=False)
    return Client(target.apihost.rstrip("/"), auth=target.auth), dict(os.environ)


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Client, dict[str, str], bool]]:
    """(client, deploy.sh's environment, whether the upload path can be checked)."""
    if os.environ.get("OWDEDUP_OPENWHISK") == "1":
        client, env = _real_target()
        yield client, env, os.environ.get("OWDEDUP_OPENWHISK_FEED") == "1"
        return
    services: Services = request.getfixturevalue("services")
    root = tmp_path_factory.mktemp("integration-serve")
    with serve_process(root, AUTH, request.getfixturevalue("runtime_site")) as client:
        env = {**os.environ, **services.env, "OW_APIHOST": client.url, "OW_AUTH": AUTH}
        for name in ("OW_NAMESPACE", "WSK_CONFIG_FILE"):
            env.pop(name, None)
        yield client, env, True  # serve runs the Kafka feed


@pytest.fixture(scope="module")
def openwhisk(target: tuple[Client, dict[str, str], bool],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenWhisk]:
    client, base_env, feed = target
    env = {**base_env, "OWDEDUP_PYTHON": base_env.get("OWDEDUP_PYTHON") or sys.executable,
           "WSKDEPLOY": base_env.get("WSKDEPLOY") or str(real_wskdeploy())}
    project = copy_project(tmp_path_factory.mktemp("integration") / "project")
    done = run_deploy_sh(project, env)
    assert done.returncode == 0, done.stdout + done.stderr
    context = Context(Settings.resolve({}, env))
    run = f"it-{uuid.uuid4().hex[:8]}"
    context.store.ensure_bucket(BUCKET)
    try:
        yield OpenWhisk(client, env, context, run, feed)
    finally:
        for info in list(context.store.list(BUCKET, prefix=run)):
            context.store.delete(BUCKET, info.key)
        context.close()
        undone = run_deploy_sh(project, env, "undeploy")
        assert undone.returncode == 0, undone.stdout + undone.stderr


def invoke(ow: OpenWhisk, key: str) -> tuple[int, dict[str, Any]]:
    reply = ow.client.request(
        "POST", f"actions/{PACKAGE}/{SEQUENCE}?blocking=true&result=true",
        {"bucket": BUCKET, "key": key})
    return reply.status, reply.json


def test_the_deployed_sequence_computes_then_deduplicates(openwhisk: OpenWhisk) -> None:
    ow = openwhisk
    data = jpeg(321, 211)
    ow.context.store.put(BUCKET, f"{ow.run}/a.jpg", data)
    ow.context.store.put(BUCKET, f"{ow.run}/same bytes.jpg", data)
    status, first = invoke(ow, f"{ow.run}/a.jpg")
    assert status == 200, first
    assert first["status"] == "computed" and first["digest"] == hashlib.sha256(data).hexdigest()
    outputs = [(o["bucket"], o["key"]) for o in first["outputs"]]
    assert outputs and all(ow.context.store.exists(b, k) for b, k in outputs)
    status, again = invoke(ow, f"{ow.run}/same bytes.jpg")
    assert status == 200 and again["status"] == "deduplicated", again
    assert [(o["bucket"], o["key"]) for o in again["outputs"]] == outputs
    assert not any(k.startswith(("store", "records")) for k in again)  # no config echoed


def test_bad_input_is_an_application_error_naming_the_object(openwhisk: OpenWhisk) -> None:
    ow = openwhisk
    key = f"{ow.run}/notes.jpg"
    ow.context.store.put(BUCKET, key, not_an_image())
    status, reply = invoke(ow, key)
    assert status == 502, reply
    assert key in reply["error"] and "not an image" in reply["error"]


def test_an_upload_alone_ends_as_a_thumbnail_and_a_record(openwhisk: OpenWhisk) -> None:
    ow = openwhisk
    if not ow.feed:
        pytest.skip("set OWDEDUP_OPENWHISK_FEED=1 where the Kafka feed provider runs")
    data = jpeg(333, 222)
    digest = hashlib.sha256(data).hexdigest()
    # The thumbnail parameters deploy.sh bound into the package (unset: the defaults).
    bound = {name: ow.env[f"OWDEDUP_{name.upper()}"] for name in ("sizes", "format", "quality")
             if ow.env.get(f"OWDEDUP_{name.upper()}", "").strip()}
    function_ids = [function_id for function_id, _ in thumbnail_outputs(data, bound)]
    in_bucket = ow.env["OWDEDUP_IN_BUCKET"]

    def all_done() -> bool:
        records = [ow.context.records.get(function_id, digest) for function_id in function_ids]
        return all(r is not None and ow.context.store.exists(r.output.bucket, r.output.key)
                   for r in records)

    ow.context.store.put(in_bucket, f"{ow.run}/uploaded.jpg", data)
    try:
        wait_until(all_done, timeout=300, what="the thumbnails and their records",
                   interval=2, ignore=(OwdedupError,))
    finally:
        ow.context.store.delete(in_bucket, f"{ow.run}/uploaded.jpg")
