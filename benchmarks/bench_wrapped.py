"""The cost of the deduplicating conductor (``owdedup wrap``) through ``owdedup serve``, warm.

Per call, blocking, after a warm-up: the wrapped action invoked directly; a hit through its
conductor (one conductor activation, the action never starts); a miss through the conductor
(the action on new content: two conductor activations around it). For a 5 ms action and a
150 ms one (sleeps), and for the thumbnail: the project's dedup-thumbnail sequence wrapped
(called directly on new content each time, so that its own lookup misses), wrapped as is
and with a pinned --version. Targets (issue 10): a hit costs at most one conductor activation
and under 10 ms end to end; a miss adds under 15 ms to the bare action. Writes results.json
and chart.png into --out and prints the table.

    python benchmarks/bench_wrapped.py --out /tmp/bench-wrapped [--calls 30]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from owdedup.actionloop.site import prepare_runtime_site
from owdedup.deploy.build import build_actions
from owdedup.openwhisk.client import Credentials, OpenWhiskClient
from owdedup.openwhisk.wrap import Executor, plan_wrap
from owdedup.serve.limits import NamespaceLimits
from owdedup.serve.server import DevServer, ServeConfig

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_wrapped, and mypy
    from benchmarks import common
else:  # python benchmarks/bench_wrapped.py: benchmarks/ is sys.path[0]
    import common

PROJECT = Path(__file__).resolve().parents[1]

AUTH = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:" + "b" * 64
ACTION = "import time\n\ndef main(params):\n    time.sleep({s})\n    return {{'n': len(params)}}\n"
THUMBNAIL_STEPS = ["hash", "lookup", "thumbnail", "record"]
HIT_TARGET_MS = 10.0
MISS_TARGET_MS = 15.0


@dataclass
class Check:
    id: str
    name: str
    measured: str
    value: float
    op: str
    target: float | None

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.op == "<=" else self.value >= self.target


def wrap(client: OpenWhiskClient, action: str, environ: dict[str, str], *,
         version: str = "", name: str = "") -> None:
    """``owdedup wrap ACTION [--version V] [--name NAME]``: its plan, run by its executor."""
    Executor(client).run(plan_wrap(action, objects="bucket/key", ignore="", version=version,
                                   name=name, no_metadata=False, project=PROJECT,
                                   environ=environ))


def timed(client: OpenWhiskClient, name: str, payload: dict[str, Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    reply = client.invoke(name, payload, blocking=True)
    elapsed = (time.perf_counter() - started) * 1000
    if reply.status != 200:
        raise RuntimeError(f"{name}: HTTP {reply.status} {reply.body}")
    return elapsed, reply.body


def measure(client: OpenWhiskClient, bucket: Path, action: str, conductor: str,
            calls: int, warmup: int, seen: bytes, extension: str = ".bin",
            direct_on_new: bool = False) -> dict[str, list[float]]:
    """Per round: *action* directly (on new content when *direct_on_new*: a wrapped sequence
    that deduplicates by itself), the conductor on seen content (a hit), the conductor on
    new content (a miss). New content: *seen* plus random bytes (a JPEG ignores them)."""
    times: dict[str, list[float]] = {"direct": [], "hit": [], "miss": []}
    (bucket / f"seen{extension}").write_bytes(seen)
    for index in range(warmup + calls):
        key = f"seen{extension}"
        if direct_on_new:
            key = f"direct-{index}{extension}"
            (bucket / key).write_bytes(seen + os.urandom(16))
        direct_ms, _ = timed(client, action, {"bucket": bucket.name, "key": key})
        hit_ms, body = timed(client, conductor, {"bucket": bucket.name,
                                                 "key": f"seen{extension}"})
        if index > 0:  # the first call records the content
            if not body["response"]["result"]["owdedup"]["hit"]:
                raise RuntimeError(f"expected a hit: {body['response']['result']}")
            if len(body.get("logs", [])) != 1:
                raise RuntimeError(f"a hit ran {len(body.get('logs', []))} activations")
        fresh = f"new-{index}{extension}"
        (bucket / fresh).write_bytes(seen + os.urandom(16))
        miss_ms, body = timed(client, conductor, {"bucket": bucket.name, "key": fresh})
        if body["response"]["result"]["owdedup"]["hit"]:
            raise RuntimeError("expected a miss on new content")
        if index >= warmup:
            times["direct"].append(direct_ms)
            times["hit"].append(hit_ms)
            times["miss"].append(miss_ms)
    return times


def deploy_thumbnail(client: OpenWhiskClient, root: Path, store: Path) -> None:
    """The project's dedup-thumbnail sequence, its zips built as deploy builds them."""
    zips = {z.name: z.path for z in build_actions(
        PROJECT / "manifest.yaml", root / "zips", only=THUMBNAIL_STEPS, log=lambda _: None)}
    bound = {"store": f"file://{store}", "records": f"sqlite://{root / 'thumbs.sqlite'}",
             "dest_bucket": "thumbs"}
    (store / "thumbs").mkdir(exist_ok=True)
    replies = [client.put_entity("packages", "owdedup", {"parameters": [
        {"key": k, "value": v} for k, v in bound.items()]}, overwrite=True)]
    for step in THUMBNAIL_STEPS:
        code = base64.b64encode(zips[step].read_bytes()).decode("ascii")
        replies.append(client.put_entity("actions", f"owdedup/{step}", {
            "exec": {"kind": "python:3.11", "code": code, "binary": True, "main": "main"},
            "limits": {"timeout": 60_000, "memory": 256}}, overwrite=True))
    replies.append(client.put_entity("actions", "owdedup/dedup-thumbnail", {"exec": {
        "kind": "sequence",
        "components": [f"/_/owdedup/{step}" for step in THUMBNAIL_STEPS]}}, overwrite=True))
    if any(reply.status != 200 for reply in replies):
        raise RuntimeError(f"deploying the thumbnail failed: {[r.body for r in replies]}")


def sample_photo() -> bytes:
    """A 1600x1200 JPEG of noise (no corpus needed): costly to decode and shrink."""
    import io

    from PIL import Image

    image = Image.frombytes("RGB", (1600, 1200), os.urandom(1600 * 1200 * 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="calls not counted (>= 1)")
    parser.add_argument("--photo", type=Path, help="a JPEG for the thumbnail (default: noise)")
    parser.add_argument("--no-thumbnail", action="store_true",
                        help="leave out the thumbnail (its zips take a while to build)")
    args = parser.parse_args()
    args.warmup = max(1, args.warmup)  # the first call records the content
    console = Console()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = root / "store"
        (store / "in").mkdir(parents=True)
        # raised: each round is up to four invocations, well over OpenWhisk's 120 a minute
        server = DevServer(ServeConfig(auth=AUTH, port=0, state_dir=root / "state",
                                       runtime_site=prepare_runtime_site(),
                                       limits=NamespaceLimits(invocations_per_minute=100_000)))
        server.start()
        environ = {"OW_APIHOST": server.url, "OW_AUTH": AUTH, "OW_NAMESPACE": "_",
                   "OWDEDUP_STORE": f"file://{store}",
                   "OWDEDUP_RECORDS": f"sqlite://{root / 'records.sqlite'}"}
        client = OpenWhiskClient(Credentials.resolve(environ))
        try:
            for label, seconds in (("5ms", 0.005), ("150ms", 0.150)):
                action = f"work{label}"
                reply = client.put_entity("actions", action, {"exec": {
                    "kind": "python:3.11", "code": ACTION.format(s=seconds)}}, overwrite=True)
                assert reply.status == 200, reply.body
                wrap(client, action, environ)
                results[label] = measure(client, store / "in", action, f"{action}-dedup",
                                         args.calls, args.warmup, b"recorded content")
            if not args.no_thumbnail:
                deploy_thumbnail(client, root, store)
                wrap(client, "owdedup/dedup-thumbnail", environ)
                photo = args.photo.read_bytes() if args.photo else sample_photo()
                results["thumbnail"] = measure(
                    client, store / "in", "owdedup/dedup-thumbnail", "dedup-thumbnail-dedup",
                    args.calls, args.warmup, photo, ".jpg", direct_on_new=True)
                # pinned: no definition read per call (a sequence's is 1 + its components')
                wrap(client, "owdedup/dedup-thumbnail", environ, version="1",
                     name="thumbnail-pinned")
                results["thumbnail-pinned"] = measure(
                    client, store / "in", "owdedup/dedup-thumbnail", "thumbnail-pinned",
                    args.calls, args.warmup, photo, ".jpg", direct_on_new=True)
        finally:
            client.close()
            server.close()
    checks: list[Check] = []
    for label, times in results.items():
        direct, hit, miss = (statistics.median(times[k]) for k in ("direct", "hit", "miss"))
        checks += [
            Check(f"d.{label}", f"{label} action, direct", f"{direct:.1f} ms median",
                  direct, "", None),
            Check(f"h.{label}", f"{label} action, hit via the conductor",
                  f"{hit:.1f} ms median (p95 {common.percentile(times['hit'], 95):.1f})",
                  hit, "<=", HIT_TARGET_MS),
            Check(f"m.{label}", f"{label} action, miss overhead (miss - direct)",
                  f"{miss - direct:.1f} ms ({miss:.1f} - {direct:.1f})",
                  miss - direct, "<=", MISS_TARGET_MS),
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"environment": common.environment([]), "timings_ms": results,
              "checks": [{**asdict(c), "passed": c.passed} for c in checks]}
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{label} {kind}" for label in results for kind in ("direct", "hit", "miss")]
    ax.barh(labels, [statistics.median(results[label][kind])
                     for label in results for kind in ("direct", "hit", "miss")])
    ax.set_xlabel("ms per call (median, warm)")
    common.save_figure(fig, "owdedup wrap through owdedup serve", args.out / "chart.png")
    table = Table(title="the conductor through owdedup serve, warm")
    for column in ("", "measurement", "value", "target", "result"):
        table.add_column(column)
    for check in checks:
        verdict = ("-" if check.passed is None
                   else "[green]PASS[/]" if check.passed else "[red]FAIL[/]")
        target = "" if check.target is None else f"{check.op} {check.target:g} ms"
        table.add_row(check.id, check.name, check.measured, target, verdict)
    console.print(table)
    return 0 if all(c.passed is not False for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
