"""``owdedup map --platform openwhisk`` end to end: the CLI against ``owdedup serve`` deployed by
the real ``deploy.sh`` (wskdeploy), with the real MinIO and CouchDB-API record store.

- Ctrl-C (SIGINT) to the CLI mid-run: it stops issuing, waits for what is in flight, writes
  one ``--results`` line per object (computed, deduplicated, or failed saying
  ``interrupted``), prints its summary and exits non-zero; a re-run invokes the sequence
  only for what the first run did not finish.
- The issue's bucket of 60 objects with duplicates and bad files, serve limited to 30
  invocations per minute and 4 concurrent: every object ends once, the 429s are met and
  absorbed (and reported), duplicates are invoked once, a re-run invokes nothing for the
  work done.

Serve runs in this process (its throttle is reachable, see :class:`MinuteByMinute`); the
CLI runs as a user runs it, in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from owdedup.openwhisk.fanout import INTERRUPTED
from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.serve.limits import NamespaceLimits, Throttle, TooManyRequests
from owdedup.serve.server import DevServer, ServeConfig
from tests.deploying import copy_project, run_deploy_sh, thumbnail_output
from tests.imagegen import jpeg
from tests.serve.conftest import AUTH, Client, wait_for
from tests.service_fixtures import Services
from tests.tooling import real_wskdeploy

SIZE = 64
SEQUENCE = "dedup-thumbnail"


@dataclass
class Deployed:
    server: DevServer
    client: Client
    env: dict[str, str]


@pytest.fixture(scope="module")
def deployed(services: Services, runtime_site: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("fanout-map")
    server = DevServer(ServeConfig(auth=AUTH, port=0, state_dir=root / "state",
                                   runtime_site=runtime_site))
    server.start()
    try:
        client = Client(server.url)
        project = copy_project(root / "project")
        env = {**os.environ, **services.env, "OW_APIHOST": server.url, "OW_AUTH": AUTH,
               "OWDEDUP_SIZES": str(SIZE), "OWDEDUP_PYTHON": sys.executable,
               "WSKDEPLOY": str(real_wskdeploy())}
        for name in ("OW_NAMESPACE", "WSK_CONFIG_FILE", "OWDEDUP_FORMAT", "OWDEDUP_QUALITY"):
            env.pop(name, None)
        done = run_deploy_sh(project, env, "--no-kafka-feed")
        assert done.returncode == 0, done.stdout + done.stderr
        yield Deployed(server, client, env)
    finally:
        server.close()


@pytest.fixture
def context(services: Services) -> Iterator[Context]:
    ctx = Context(Settings.resolve({}, services.env))
    yield ctx
    ctx.close()


def fill_bucket(context: Context, objects: dict[str, bytes]) -> str:
    bucket = f"owdedup-fanout-{uuid.uuid4().hex[:8]}"
    context.store.ensure_bucket(bucket)
    for key, data in objects.items():
        context.store.put(bucket, key, data)
    return bucket


def sequence_runs(deployed: Deployed) -> list[dict[str, Any]]:
    """Every activation of the deployed sequence so far (paged: at most 200 a page)."""
    found: list[dict[str, Any]] = []
    while True:
        page = deployed.client.request(
            "GET", f"activations?name={SEQUENCE}&docs=true&limit=200&skip={len(found)}").json
        found += page
        if len(page) < 200:
            return found


def new_runs(deployed: Deployed, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = {run["activationId"] for run in before}
    return [run for run in sequence_runs(deployed) if run["activationId"] not in seen]


def invoked_keys(runs: list[dict[str, Any]]) -> Counter[str]:
    """The object each sequence run was for (its result names it, success or not)."""
    keys: Counter[str] = Counter()
    for run in runs:
        result = run["response"]["result"]
        key = result.get("key") or re.match(r"([^:]+):", result.get("error", ""))
        keys[key if isinstance(key, str) else key.group(1) if key else "?"] += 1
    return keys


def map_command(deployed: Deployed, bucket: str, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "owdedup", "map", "thumbnail", bucket,
            deployed.env["OWDEDUP_OUT_BUCKET"], "--platform", "openwhisk", "--size", str(SIZE),
            "--results", str(results), "--quiet", *extra]


def run_map(deployed: Deployed, bucket: str, tmp: Path,
            *extra: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    results = tmp / f"results-{uuid.uuid4().hex[:6]}.jsonl"
    done = subprocess.run(map_command(deployed, bucket, results, *extra), cwd=tmp,
                          env=deployed.env, capture_output=True, text=True, timeout=600,
                          check=False)
    return done.returncode, read_results(results), done.stdout + done.stderr


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The results file by key, asserting that no object has two lines."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_key = {line["key"]: line for line in lines}
    assert len(by_key) == len(lines), "an object has more than one line"
    return by_key


def reported(output: str, row: str) -> int:
    """A number from the summary tables the CLI prints (``invocations made  12``)."""
    found = re.search(rf"{re.escape(row)}\s*│?\s*(\d+)", output)
    assert found, f"no {row!r} in:\n{output}"
    return int(found.group(1))


def statuses(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {key: line["status"] for key, line in results.items()}


# -- Ctrl-C -------------------------------------------------------------------------------------


def test_ctrl_c_keeps_what_finished_and_a_rerun_does_only_the_rest(
        deployed: Deployed, context: Context, tmp_path: Path) -> None:
    photos = {f"p{n:02d}.jpg": jpeg(120 + n, 90 + n) for n in range(16)}
    photos |= {f"copy-of-p{n:02d}.jpg": photos[f"p{n:02d}.jpg"] for n in (3, 12)}
    bucket = fill_bucket(context, photos)
    before = sequence_runs(deployed)
    results = tmp_path / "results.jsonl"
    # One invocation at a time, so that the run is surely mid-way when the signal lands.
    cli = subprocess.Popen(map_command(deployed, bucket, results, "--window", "1"),
                           cwd=tmp_path, env=deployed.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: len(new_runs(deployed, before)) >= 3, timeout=180,
                 what="three objects computed")
        cli.send_signal(signal.SIGINT)
        output, _ = cli.communicate(timeout=120)  # stops promptly: no waiting for the rest
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 1, output
    assert "stopping: waiting for the invocations in flight" in output
    assert "owdedup map" in output and "invocations made" in output  # the summaries

    first = read_results(results)
    assert set(first) == set(photos)  # every object once, none left out
    done = {k for k, s in statuses(first).items() if s in ("computed", "deduplicated")}
    stopped = set(photos) - done
    assert len(done) >= 3 and stopped, output
    for key in stopped:
        assert first[key]["status"] == "failed"
        assert first[key]["error"] == f"{key}: {INTERRUPTED}"
    invoked_first = invoked_keys(new_runs(deployed, before))
    assert max(invoked_first.values()) == 1  # nothing invoked twice
    assert reported(output, "invocations made") == sum(invoked_first.values())

    before = sequence_runs(deployed)
    code, second, output = run_map(deployed, bucket, tmp_path, "--window", "1")
    assert code == 0, output
    assert set(second) == set(photos)
    assert {k for k, s in statuses(second).items() if s == "computed"} <= stopped
    assert all(statuses(second)[key] == "deduplicated" for key in done)
    invoked_again = invoked_keys(new_runs(deployed, before))
    # Only the rest: of each content not finished, its first name; nothing done is redone.
    assert set(invoked_again) <= stopped and max(invoked_again.values()) == 1
    assert not set(invoked_again) & set(invoked_first)
    assert reported(output, "invocations made") == sum(invoked_again.values())
    for key in done:
        _, out_key = thumbnail_output(photos[key], {"sizes": str(SIZE)})
        assert [o["key"] for o in second[key]["outputs"]] == [out_key]


# -- 60 objects at 30 a minute ------------------------------------------------------------------


class MinuteByMinute(Throttle):
    """Serve's own throttle (the same counting, the same 429s), on a clock whose minutes the
    test ends: a minute lasts until the namespace has refused a request in it, then another
    ``pause_s``.

    Why not wall-clock minutes: the run makes 48 invocations against 30 a minute, so with
    real minutes it waits up to a minute for the next one (the suite's time), and it is not
    even sure to meet a 429: epoch minutes can split the 48 as 24 + 24. Here the first minute
    surely admits 30 and refuses the 31st, and the next minute comes as soon as the client
    has been refused, which is what is tested: that a 429 is absorbed, not how long a
    minute is.
    """

    def __init__(self, limits: NamespaceLimits, previous: Throttle, pause_s: float) -> None:
        self.minute = 0
        self.refused: list[str] = []
        self._pause_s = pause_s
        self._ending: threading.Timer | None = None
        super().__init__(limits, previous.in_flight, clock_s=lambda: self.minute * 60.0)

    def admit_invoke(self) -> None:
        try:
            super().admit_invoke()
        except TooManyRequests as refusal:
            self.refused.append(refusal.message)
            if "in the last minute" in refusal.message and self._ending is None:
                self._ending = threading.Timer(self._pause_s, self._next_minute)
                self._ending.start()
            raise

    def _next_minute(self) -> None:
        self.minute += 1
        self._ending = None


@pytest.fixture
def limited(deployed: Deployed) -> Iterator[MinuteByMinute]:
    controller = deployed.server.controller
    previous = controller.throttle
    controller.throttle = MinuteByMinute(
        NamespaceLimits(invocations_per_minute=30, concurrent_invocations=4), previous,
        pause_s=0.5)
    yield controller.throttle
    controller.throttle = previous


def bad_file(n: int) -> bytes:
    return f"Shopping list {n}, not a picture.\nmilk\neggs\n".encode()


def test_sixty_objects_at_thirty_a_minute_and_four_at_once(
        deployed: Deployed, limited: MinuteByMinute, context: Context, tmp_path: Path) -> None:
    photos = {f"p{n:02d}.jpg": jpeg(100 + n, 80 + n) for n in range(44)}
    objects = {**photos,
               **{f"z-copies/p{n:02d}.jpg": photos[f"p{n:02d}.jpg"] for n in range(0, 36, 3)},
               **{f"bad{n}.jpg": bad_file(n) for n in range(4)}}
    assert len(objects) == 60
    bucket = fill_bucket(context, objects)
    before = sequence_runs(deployed)

    code, results, output = run_map(deployed, bucket, tmp_path)  # window: the namespace's 4
    assert code == 1, output  # the bad files failed
    assert set(results) == set(objects)  # none lost, none twice (read_results)
    for n in range(4):
        line = results[f"bad{n}.jpg"]
        assert line["status"] == "failed" and f"bad{n}.jpg" in line["error"], line
        assert "not an image" in line["error"]
    good = {k: s for k, s in statuses(results).items() if not k.startswith("bad")}
    # Of each content, the first name in key order computes; its copy shares the result.
    assert good == {**{k: "computed" for k in photos},
                    **{k: "deduplicated" for k in objects if k.startswith("z-copies/")}}
    for key in ("p00.jpg", "z-copies/p00.jpg"):
        _, out_key = thumbnail_output(objects[key], {"sizes": str(SIZE)})
        assert [o["key"] for o in results[key]["outputs"]] == [out_key]

    # 48 distinct contents, each invoked once; 30 a minute, so 429s were met on the way.
    invoked = invoked_keys(new_runs(deployed, before))
    assert sum(invoked.values()) == 48 and max(invoked.values()) == 1
    assert reported(output, "invocations made") == 48
    assert reported(output, "invocations saved") == 12
    rate_refusals = [r for r in limited.refused if "in the last minute" in r]
    assert rate_refusals and limited.minute >= 1
    # Every 429 serve answered reached the client and was absorbed (re-queued, never lost).
    assert reported(output, "429s met (absorbed)") == len(limited.refused)

    before = sequence_runs(deployed)
    code, again, output = run_map(deployed, bucket, tmp_path)
    assert code == 1, output
    assert statuses(again) == {**{k: "deduplicated" for k in objects if k in good},
                               **{f"bad{n}.jpg": "failed" for n in range(4)}}
    # The work done is never invoked again, nor are the refused files: their refusals are
    # recorded by content (issue 11); a re-run makes zero invocations, as the issue asks.
    assert invoked_keys(new_runs(deployed, before)) == {}
    assert reported(output, "invocations made") == 0
