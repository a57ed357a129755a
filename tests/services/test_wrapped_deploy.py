"""Deduplicating actions owdedup did not write, end to end (issue 10: items 7 and 8, "Tests").

One ``owdedup serve`` (a subprocess, the runtime image's packages) on the real MinIO and
CouchDB-API server, with, deployed by the real wskdeploy:

- the project's manifest (``deploy.sh --no-kafka-feed``): the thumbnail's ``dedup-thumbnail``;
- ``examples/wrapped/manifest.yaml`` (``owdedup deploy --project``): ``image-metadata`` and
  ``matmul``, each with its conductor ``*-dedup`` declared beside it;

and wrapped with the real ``owdedup wrap``: a Python action created as ``wsk action create``
creates it (``scale``); the same conductor, bound to another action, wraps ``slow`` (which
runs out of time) and the sequence ``dedup-thumbnail``.
Whether the wrapped action ran is read from the activations API (its activation count), as
a user would check it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import pytest

from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.records.couchdb import parse_url
from owdedup.runtime.wrapped.identity import action_fingerprint
from owdedup.runtime.wrapped.keying import DEFAULT_OBJECTS, key_call
from tests.deploying import copy_project, entities, run_deploy_sh, serve_process, thumbnail_output
from tests.imagegen import CAMERA_MAKE, jpeg, not_an_image
from tests.serve.conftest import AUTH, Client, params
from tests.service_fixtures import PROJECT, Services
from tests.tooling import real_wskdeploy

SIZE = 64
EXAMPLES = "owdedup-examples"
INPUTS = "owdedup-wrapped-inputs"  # a bucket that sends no upload events
#: What the thumbnail's sequence is wrapped with: its output location and the stores'
#: settings (bound on its package, so part of its definition) do not affect its output.
THUMBNAIL_IGNORED = ("dest_bucket,store,store_access_key,store_secret_key,records,"
                     "records_username,records_password")
SCALE = """
def main(params):
    if params.get("fail"):
        return {"error": "scale refuses: " + str(params["fail"])}
    return {"scaled": params["factor"] * 7, "version": VERSION}
"""
SLOW = "import time\n\ndef main(params):\n    time.sleep(5)\n    return {'late': True}\n"


@dataclass
class Deployed:
    client: Client
    env: dict[str, str]
    context: Context
    outputs: list[str]  # what deploy and wrap printed

    def invoke(self, name: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        reply = self.client.invoke(name, payload, blocking=True, result=True)
        result: dict[str, Any] = reply.json
        return reply.status, result

    def activations(self, name: str) -> int:
        """How many activations of the action *name* (no package) the server holds."""
        listed = self.client.request("GET", f"activations?name={name}&limit=200").json
        assert len(listed) < 200  # counted whole
        return len(listed)

    def put(self, key: str, data: bytes) -> tuple[str, str]:
        self.context.store.put(INPUTS, key, data)
        return INPUTS, key

    def wrap(self, project: Path, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "owdedup", "wrap", *args, "--project", str(project)],
            env=self.env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        self.outputs.append(done.stdout + done.stderr)

    def wrap_like(self, conductor: str, action: str, name: str, ignore: str) -> None:
        """What ``owdedup wrap`` makes, copied from a conductor it made (its zip, annotations
        and stores) but for *action*: the conductor's zip is not built again."""
        made = self.client.request("GET", f"actions/{conductor}").json
        bound = {p["key"]: p["value"] for p in made["parameters"]}
        bound.update({"owdedup_action": action, "owdedup_ignore": ignore})
        reply = self.client.put(f"actions/{name}", {
            "exec": made["exec"], "annotations": made["annotations"],
            "parameters": params(bound), "limits": made["limits"]}, overwrite=True)
        assert reply.status == 200, reply.raw


def scale_code(version: int) -> str:
    return f"VERSION = {version}\n{SCALE}"


@pytest.fixture(scope="module")
def deployed(services: Services, runtime_site: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("wrapped-deploy")
    with serve_process(root, AUTH, runtime_site) as client:
        env = {**os.environ, **services.env, "OW_APIHOST": client.url, "OW_AUTH": AUTH,
               "OWDEDUP_SIZES": str(SIZE), "OWDEDUP_PYTHON": sys.executable,
               "WSKDEPLOY": str(real_wskdeploy())}
        for name in ("OW_NAMESPACE", "WSK_CONFIG_FILE", "OWDEDUP_FORMAT", "OWDEDUP_QUALITY"):
            env.pop(name, None)
        project = copy_project(root / "project")
        done = run_deploy_sh(project, env, "--no-kafka-feed")
        assert done.returncode == 0, done.stdout + done.stderr
        examples = root / "examples"
        shutil.copytree(PROJECT / "examples" / "wrapped", examples,
                        ignore=shutil.ignore_patterns("__pycache__", "build", ".owdedup"))
        example = subprocess.run(
            [sys.executable, "-m", "owdedup", "deploy", "--project", str(examples),
             "--no-kafka-feed"], env=env, capture_output=True, text=True, timeout=1800,
            stdin=subprocess.DEVNULL, check=False)
        assert example.returncode == 0, example.stdout + example.stderr
        context = Context(Settings.resolve({}, services.env))
        context.store.ensure_bucket(INPUTS)
        deployment = Deployed(client, env, context, [done.stdout + done.stderr,
                                                     example.stdout + example.stderr])
        client.action("scale", scale_code(1), parameters=params({"factor": 2}))
        deployment.wrap(project, "scale", "--ignore", "dest_bucket,token")
        client.action("slow", SLOW, limits={"timeout": 1000})
        deployment.wrap_like("scale-dedup", "slow", "slow-dedup", "")
        deployment.wrap_like("scale-dedup", "owdedup/dedup-thumbnail", "thumbnail-dedup",
                             THUMBNAIL_IGNORED)
        yield deployment
        context.close()


def unique(name: str) -> str:
    return f"{uuid.uuid4().hex[:8]}/{name}"


def without_metadata(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "owdedup"}


def test_wskdeploy_deploys_the_examples_with_their_conductors(deployed: Deployed) -> None:
    actions = entities(deployed.client)["actions"]
    wrapped = ("image-metadata", "matmul")
    assert {f"{EXAMPLES}/{name}{suffix}" for name in wrapped for suffix in ("", "-dedup")} \
        <= actions
    for name in wrapped:
        action = deployed.client.request("GET", f"actions/{EXAMPLES}/{name}-dedup").json
        annotations = {a["key"]: a["value"] for a in action["annotations"]}
        assert annotations["conductor"] is True and annotations["provide-api-key"] is True
        bound = {p["key"]: p["value"] for p in action["parameters"]}
        assert bound["owdedup_action"] == f"{EXAMPLES}/{name}"


def test_image_metadata_runs_once_per_content(deployed: Deployed) -> None:
    photo = jpeg(320, 240, exif_gps=True)
    first, again = deployed.put(unique("a.jpg"), photo), deployed.put(unique("copy.jpg"), photo)
    runs = deployed.activations("image-metadata")

    status, computed = deployed.invoke(f"{EXAMPLES}/image-metadata-dedup",
                                       {"bucket": first[0], "key": first[1]})
    assert status == 200, computed
    assert (computed["width"], computed["height"], computed["format"]) == (320, 240, "JPEG")
    assert computed["exif"]["Make"] == CAMERA_MAKE and len(computed["dhash"]) == 16
    assert computed["owdedup"]["hit"] is False
    assert deployed.activations("image-metadata") == runs + 1

    status, hit = deployed.invoke(f"{EXAMPLES}/image-metadata-dedup",
                                  {"bucket": again[0], "key": again[1]})
    assert status == 200, hit
    assert hit["owdedup"]["hit"] is True
    assert hit["owdedup"]["activation"] == computed["owdedup"]["activation"]
    assert without_metadata(hit) == without_metadata(computed)
    assert deployed.activations("image-metadata") == runs + 1  # not run again
    # what the action itself answers for these bytes
    status, direct = deployed.invoke(f"{EXAMPLES}/image-metadata",
                                     {"bucket": again[0], "key": again[1]})
    assert status == 200 and direct == without_metadata(computed)


def test_a_refused_image_is_an_error_naming_it_and_is_not_recorded(deployed: Deployed) -> None:
    bad = deployed.put(unique("notes.jpg"), not_an_image())
    runs = deployed.activations("image-metadata")
    for attempt in (1, 2):
        status, refused = deployed.invoke(f"{EXAMPLES}/image-metadata-dedup",
                                          {"bucket": bad[0], "key": bad[1]})
        assert status == 502, refused
        assert refused["error"].startswith(f"image-metadata: {bad[0]}/{bad[1]} is not an image")
        assert deployed.activations("image-metadata") == runs + attempt  # run each time


def npy(matrix: Any) -> bytes:
    buffer = io.BytesIO()
    numpy.save(buffer, matrix)
    return buffer.getvalue()


def test_matmul_runs_once_per_pair_of_matrices(deployed: Deployed) -> None:
    rng = numpy.random.default_rng(7)
    a, b = rng.random((40, 30)), rng.integers(-9, 9, size=(30, 20)).astype("<i8")
    names = {side: deployed.put(unique(f"{side}.npy"), npy(m)) for side, m in
             (("a", a), ("b", b), ("a2", a), ("b2", b))}

    def call(x: str, y: str, dest: str) -> tuple[int, dict[str, Any]]:
        return deployed.invoke(f"{EXAMPLES}/matmul-dedup", {
            "a_bucket": names[x][0], "a_key": names[x][1],
            "b_bucket": names[y][0], "b_key": names[y][1], "dest_bucket": dest})

    outb = deployed.env["OWDEDUP_OUT_BUCKET"]
    runs = deployed.activations("matmul")
    status, product = call("a", "b", outb)
    assert status == 200, product
    assert product["shape"] == [40, 20] and product["owdedup"]["hit"] is False
    stored = deployed.context.store.read_bytes(product["bucket"], product["key"])
    assert numpy.allclose(numpy.load(io.BytesIO(stored)), a @ b)
    # the same matrices under other names, the product asked elsewhere (not an output-
    # affecting parameter): the recorded product, matmul not run
    status, hit = call("a2", "b2", "elsewhere")
    assert status == 200 and hit["owdedup"]["hit"] is True
    assert without_metadata(hit) == without_metadata(product)
    assert deployed.activations("matmul") == runs + 1
    # the same objects in the other roles are another call: b (30x20) times a (40x30) refused
    status, swapped = call("b", "a", outb)
    assert status == 502 and "cannot multiply" in swapped["error"]
    assert deployed.activations("matmul") == runs + 2


def test_a_wrapped_python_action_misses_when_its_code_or_bound_parameters_change(
    deployed: Deployed,
) -> None:
    data = os.urandom(64)
    first, other = deployed.put(unique("x.bin"), data), deployed.put(unique("y.bin"), data)

    def invoke(where: tuple[str, str], **extra: Any) -> dict[str, Any]:
        status, result = deployed.invoke("scale-dedup", {"bucket": where[0], "key": where[1],
                                                         **extra})
        assert status == 200, result
        return result

    runs = deployed.activations("scale")
    miss = invoke(first, dest_bucket="out-1", token="t-1")
    assert miss["owdedup"]["hit"] is False and miss["version"] == 1
    assert deployed.activations("scale") == runs + 1
    # another name, other values of the parameters declared as not affecting the output: hit
    hit = invoke(other, dest_bucket="out-2", token="t-2")
    assert hit["owdedup"]["hit"] is True and without_metadata(hit) == without_metadata(miss)
    assert deployed.activations("scale") == runs + 1
    # an output-affecting parameter of the call: miss
    assert invoke(first, dest_bucket="out-1", mode="other")["owdedup"]["hit"] is False
    assert deployed.activations("scale") == runs + 2

    deployed.client.action("scale", scale_code(2), parameters=params({"factor": 2}))
    updated = invoke(first, dest_bucket="out-1")
    assert updated["owdedup"]["hit"] is False and updated["version"] == 2  # never stale
    assert invoke(other, dest_bucket="out-3")["owdedup"]["hit"] is True
    assert deployed.activations("scale") == runs + 3

    deployed.client.action("scale", scale_code(2), parameters=params({"factor": 3}))
    rebound = invoke(first, dest_bucket="out-1")
    assert rebound["owdedup"]["hit"] is False
    assert rebound["scaled"] == 21 and updated["scaled"] == 14
    assert deployed.activations("scale") == runs + 4


def test_a_wrapped_action_error_is_returned_as_it_is_and_not_recorded(
    deployed: Deployed,
) -> None:
    where = deployed.put(unique("e.bin"), os.urandom(32))
    runs = deployed.activations("scale")
    for attempt in (1, 2):
        status, result = deployed.invoke("scale-dedup", {"bucket": where[0], "key": where[1],
                                                         "fail": "on purpose"})
        assert status == 502, result
        assert result["error"] == "scale refuses: on purpose"
        assert result["owdedup"]["recorded"] is False
        assert deployed.activations("scale") == runs + attempt  # not recorded: runs again


def test_a_wrapped_action_that_times_out_is_a_clear_error_and_not_recorded(
    deployed: Deployed,
) -> None:
    where = deployed.put(unique("t.bin"), os.urandom(32))
    runs = deployed.activations("slow")
    for attempt in (1, 2):
        status, result = deployed.invoke("slow-dedup", {"bucket": where[0], "key": where[1]})
        assert status == 502, result
        assert "exceeded its time limits of 1000 milliseconds" in result["error"]
        # OpenWhisk's message names neither: the wrapper's metadata does
        assert result["owdedup"] == {"hit": False, "recorded": False, "action": "slow",
                                     "objects": [f"{where[0]}/{where[1]}"]}
        assert deployed.activations("slow") == runs + attempt


def test_the_thumbnail_through_the_generic_wrapper(deployed: Deployed) -> None:
    """Item 7: the wrapped sequence gives the thumbnail's own output, and keeps a record of
    its own beside the thumbnail's: same input digest, another function identity (its
    fingerprint is the sequence's definition, not the thumbnail's code identity), a result
    naming the same thumbnail object."""
    photo = jpeg(263, 171)
    first, again = deployed.put(unique("t.jpg"), photo), deployed.put(unique("t-copy.jpg"), photo)
    thumbnail_id, out_key = thumbnail_output(photo, {"sizes": str(SIZE)})
    runs = deployed.activations("dedup-thumbnail")

    status, computed = deployed.invoke("thumbnail-dedup", {"bucket": first[0], "key": first[1]})
    assert status == 200, computed
    assert computed["status"] == "computed" and computed["owdedup"]["hit"] is False
    assert [o["key"] for o in computed["outputs"]] == [out_key]
    status, hit = deployed.invoke("thumbnail-dedup", {"bucket": again[0], "key": again[1]})
    assert status == 200 and hit["owdedup"]["hit"] is True
    assert without_metadata(hit) == without_metadata(computed)  # the recorded result, as is:
    assert (hit["key"], hit["status"]) == (first[1], "computed")  # the recording call's input
    assert deployed.activations("dedup-thumbnail") == runs + 1

    digest = computed["digest"]
    own = deployed.context.records.get(thumbnail_id, digest)
    assert own is not None and own.output.key == out_key
    env = {"__OW_API_HOST": deployed.client.url, "__OW_API_KEY": AUTH,
           "__OW_NAMESPACE": "guest"}
    ignored = THUMBNAIL_IGNORED.split(",")
    call = key_call({"bucket": first[0], "key": first[1]}, function="owdedup/dedup-thumbnail",
                    fingerprint=action_fingerprint("owdedup/dedup-thumbnail", env, ignored),
                    objects=DEFAULT_OBJECTS, ignore=ignored, store=deployed.context.store)
    wrapped = deployed.context.records.get(call.function_id, call.input_digest)
    assert wrapped is not None and wrapped.result is not None
    assert wrapped.input_digest == own.input_digest == digest
    assert wrapped.function_id != own.function_id
    assert [o["key"] for o in wrapped.result["outputs"]] == [own.output.key]
    # The recorded result names the recording call's input: once that object is gone, the
    # record is not believed (a miss; the sequence's own record still answers).
    deployed.context.store.delete(*first)
    status, rerun = deployed.invoke("thumbnail-dedup", {"bucket": again[0], "key": again[1]})
    assert status == 200 and rerun["owdedup"]["hit"] is False
    assert (rerun["key"], rerun["status"]) == (again[1], "deduplicated")
    assert deployed.activations("dedup-thumbnail") == runs + 2

    # computed by the sequence itself first: the wrapper misses, the sequence deduplicates
    other = jpeg(264, 172)
    direct = deployed.put(unique("d.jpg"), other)
    status, plain = deployed.invoke("owdedup/dedup-thumbnail",
                                    {"bucket": direct[0], "key": direct[1]})
    assert status == 200 and plain["status"] == "computed"
    status, through = deployed.invoke("thumbnail-dedup", {"bucket": direct[0], "key": direct[1]})
    assert status == 200 and through["owdedup"]["hit"] is False
    assert through["status"] == "deduplicated"
    assert [o["key"] for o in through["outputs"]] == [o["key"] for o in plain["outputs"]]


def test_no_credential_in_results_records_or_logs(deployed: Deployed) -> None:
    """Everything the module made (last in it: every other test's work too) is searched for
    the keys it was deployed with; its own calls make sure there is a miss, a hit and an
    error of a wrapped action whose bound parameters hold the store's keys."""
    photo = deployed.put(unique("s.jpg"), jpeg(150, 100, exif_gps=True))
    copy = deployed.put(unique("s-copy.jpg"), jpeg(150, 100, exif_gps=True))
    for where in (photo, copy):
        status, _ = deployed.invoke(f"{EXAMPLES}/image-metadata-dedup",
                                    {"bucket": where[0], "key": where[1]})
        assert status == 200
    status, _ = deployed.invoke(f"{EXAMPLES}/image-metadata-dedup",
                                {"bucket": photo[0], "key": "missing.jpg"})
    assert status == 502
    secrets = [deployed.env[name] for name in ("OWDEDUP_STORE_SECRET_KEY",
                                               "OWDEDUP_RECORDS_PASSWORD")
               if deployed.env.get(name)]
    secrets.append(AUTH.partition(":")[2])
    activations = deployed.client.request("GET", "activations?docs=true&limit=200").json
    assert len(activations) >= 7  # with their results and logs
    logs = [deployed.client.request("GET", f"activations/{a['activationId']}/logs").raw
            for a in activations]
    base, database = parse_url(deployed.env["OWDEDUP_RECORDS"])
    request = urllib.request.Request(f"{base}/{database}/_all_docs?include_docs=true")
    if deployed.env.get("OWDEDUP_RECORDS_PASSWORD"):
        user = deployed.env.get("OWDEDUP_RECORDS_USERNAME", "")
        token = base64.b64encode(f"{user}:{deployed.env['OWDEDUP_RECORDS_PASSWORD']}".encode())
        request.add_header("Authorization", "Basic " + token.decode())
    with urllib.request.urlopen(request, timeout=30) as reply:
        records = reply.read().decode()
    assert '"result"' in records  # the wrapped results are there
    everything = "\n".join([json.dumps(activations), *(log.decode() for log in logs), records,
                            *deployed.outputs])
    for secret in secrets:
        assert secret not in everything
