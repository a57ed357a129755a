"""The thumbnail through the generic wrapper (``owdedup wrap owdedup/dedup-thumbnail``, issue
10, item 7): what a hit saves and a miss costs on a real photo, per call through ``owdedup
serve``, warm. ``bench_wrapped.py`` measures the same for actions that sleep; this one for the
project's own thumbnail sequence, whose cost is real work and whose definition is four actions
the conductor fingerprints.

Run from the repository root::

    .venv/bin/python benchmarks/bench_wrapped_thumbnail.py \\
        --photos /work/shared/corpus/photos --out bench-results/wrapped-thumbnail

``owdedup serve`` runs as a subprocess (a free port, a generated key, the python:3.11 image's
packages, as ``bench_actions.py`` runs it); the stores are local (a folder store and SQLite
records), so the numbers are the platform's and the conductor's, not a network's. Deployed
through its REST API: the package ``owdedup`` bound to the local stores (256 px), its four
step zips and the sequence ``dedup-thumbnail``; then ``thumbnail-dedup``, made by the real
``owdedup wrap owdedup/dedup-thumbnail --ignore dest_bucket``. The input is the
median-sized JPEG of ``--photos``.

Per configuration, ``--invokes`` blocking invokes with ``result=true`` on a new connection
each (as ``wsk`` does), after ``--warmup`` unmeasured ones, the configurations interleaved
round by round so that outside load hits them alike; median and p95 at the client:

* ``direct-new``: ``dedup-thumbnail`` itself on new content (the photo's bytes plus 16 random
  trailing bytes, which JPEG decoders ignore: a new digest, so the thumbnail is computed);
* ``direct-dup``: ``dedup-thumbnail`` on a duplicate (the sequence's own hit: four
  activations);
* ``hit``: the conductor on a recorded call (one conductor activation; the sequence never
  starts);
* ``miss``: the conductor on new content (hash, lookup, continuation, the sequence, the
  conductor's second activation, which records).

and, to explain the hit: ``fp.*``, the reads of the wrapped action's definition that the
conductor makes on every call (``action_fingerprint`` through the same REST API, one
kept-alive session as in the conductor), for the sequence and for one action alone.

Targets (issue 10): a hit costs at most one conductor activation (counted from the
composition's activation record: its logs are the ids of the activations it made) and
< 10 ms end to end; a miss adds < 15 ms to the bare action (median miss - median
direct-new). The machine may be shared: the load average is recorded at the start and the
end; read the numbers as measured under that load.

Outputs in ``--out``: ``results.json`` (environment, every raw time, the checks) and
``chart.png``; the table is printed.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL
from rich.console import Console

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_wrapped, and mypy
    from benchmarks.bench_actions import Rest, base_python, pick_photo, serve

    from benchmarks import common
else:  # python benchmarks/bench_wrapped.py: benchmarks/ is sys.path[0]
    import common
    from bench_actions import Rest, base_python, pick_photo, serve

from owdedup.actionloop.site import prepare_runtime_site
from owdedup.deploy.build import build_actions
from owdedup.runtime.wrapped.identity import action_fingerprint

PROJECT = Path(__file__).resolve().parent.parent
STEPS = ("hash", "lookup", "thumbnail", "record")
CONDUCTOR = "thumbnail-dedup"
SRC, DEST = "photos", "thumbs"
HIT_TARGET_MS = 10.0
MISS_OVERHEAD_TARGET_MS = 15.0
@dataclass
class Report(common.BaseReport):
    timings_key = "invoke_ms"
    times: dict[str, list[float]] = field(default_factory=dict)

    def timings_json(self) -> dict[str, Any]:
        return self.times


@dataclass
class Config:
    name: str  # "hit"
    action: str  # as the REST path names it: "thumbnail-dedup", "owdedup/dedup-thumbnail"
    payload: Callable[[], dict[str, Any]]  # untimed: may write a new object first
    expect: Callable[[dict[str, Any]], bool]


def median(values: Sequence[float]) -> float:
    return common.percentile(values, 50)


def invoke(rest: Rest, action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    status, reply = rest.call("POST", f"actions/{action}?blocking=true&result=true",
                              dict(payload), keep_alive=False)
    if status != 200 or not isinstance(reply, dict) or "error" in reply:
        raise RuntimeError(f"invoke {action}: {status} {reply}")
    return reply


def wrap(rest: Rest, action: str, name: str, stores: Mapping[str, str], work: Path) -> None:
    """``owdedup wrap`` as a user runs it (the conductor's zip built into *work*)."""
    project = work / "project"
    if not project.exists():
        (project / "actions").mkdir(parents=True)
        shutil.copy2(PROJECT / "actions" / "dedup.py", project / "actions" / "dedup.py")
    env = {**os.environ, **stores, "OW_APIHOST": f"http://127.0.0.1:{rest.port}",
           "OW_AUTH": auth_of(rest), "WSK_CONFIG_FILE": str(work / "no-wskprops")}
    env.pop("OW_NAMESPACE", None)
    done = subprocess.run(
        [sys.executable, "-m", "owdedup", "wrap", action, "--name", name, "--ignore",
         "dest_bucket", "--project", str(project)],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"owdedup wrap {action}: {done.stdout}{done.stderr}")


def auth_of(rest: Rest) -> str:
    """The key *rest* sends (``uuid:key``), for ``owdedup wrap``'s environment."""
    return base64.b64decode(rest.headers["Authorization"].split()[1]).decode()


def hit_activations(rest: Rest, action: str, payload: Mapping[str, Any]) -> list[str]:
    """The names of the activations one (hit) call of the conductor *action* made."""
    status, record = rest.call("POST", f"actions/{action}?blocking=true", dict(payload),
                               keep_alive=False)
    if status != 200 or not isinstance(record, dict):
        raise RuntimeError(f"invoke {action}: {status} {record}")
    names = []
    for activation_id in record.get("logs", []):
        _, derived = rest.call("GET", f"activations/{activation_id}", keep_alive=False)
        names.append(str(derived["name"]))
    return names


def fingerprint_reads(rest: Rest, calls: int) -> dict[str, list[float]]:
    """What the conductor's first activation spends reading the wrapped action's definition
    on every call (``action_fingerprint``: the definition without its code, its package's,
    and a sequence's components' alike), timed here through the same REST API with the
    same client (one kept-alive session): for the sequence (5 actions, 5 packages: 10 GETs)
    and for one of its actions alone (2 GETs)."""
    env = {"__OW_API_HOST": f"http://127.0.0.1:{rest.port}", "__OW_API_KEY": auth_of(rest),
           "__OW_NAMESPACE": "_"}
    ignored = ["dest_bucket", "store", "records"]
    times: dict[str, list[float]] = {"sequence": [], "one-action": []}
    for _ in range(calls):
        for name, action in (("sequence", "owdedup/dedup-thumbnail"),
                             ("one-action", "owdedup/hash")):
            started = time.perf_counter()
            action_fingerprint(action, env, ignored)
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def bench(report: Report, photo: Path, runtime_site: Path, work: Path, invokes: int,
          warmup: int, console: Console) -> None:
    console.print("building the zips ...")
    zips = {item.name: item.path for item in build_actions(
        PROJECT / "manifest.yaml", work / "zips", only=STEPS, log=lambda _: None)}
    store = work / "store"
    (store / SRC).mkdir(parents=True)
    stores = {"OWDEDUP_STORE": store.as_uri(),
              "OWDEDUP_RECORDS": f"sqlite://{work / 'records.sqlite'}"}
    data = photo.read_bytes()
    (store / SRC / "photo.jpg").write_bytes(data)
    counter = iter(range(1 << 30))

    def new_photo() -> dict[str, Any]:
        key = f"new-{next(counter)}{photo.suffix}"
        (store / SRC / key).write_bytes(data + random.randbytes(16))
        return {"bucket": SRC, "key": key}

    with serve(work, runtime_site) as rest:
        bound = {"store": stores["OWDEDUP_STORE"], "records": stores["OWDEDUP_RECORDS"],
                 "dest_bucket": DEST, "sizes": "256"}
        rest.put("packages/owdedup",
                 {"parameters": [{"key": k, "value": v} for k, v in bound.items()]})
        for step in STEPS:
            code = base64.b64encode(zips[step].read_bytes()).decode("ascii")
            rest.put(f"actions/owdedup/{step}", {
                "exec": {"kind": "python:3.11", "code": code, "binary": True, "main": "main"},
                "limits": {"timeout": 60_000, "memory": 256}})
        rest.put("actions/owdedup/dedup-thumbnail", {"exec": {
            "kind": "sequence", "components": [f"/_/owdedup/{s}" for s in STEPS]}})
        console.print("owdedup wrap owdedup/dedup-thumbnail ...")
        wrap(rest, "owdedup/dedup-thumbnail", CONDUCTOR, stores, work)
        picture = {"bucket": SRC, "key": "photo.jpg"}
        invoke(rest, CONDUCTOR, picture)  # recorded: every later call is a hit

        def hit(r: dict[str, Any]) -> bool:
            return r.get("owdedup", {}).get("hit") is True

        def miss(r: dict[str, Any]) -> bool:
            return r.get("owdedup", {}).get("hit") is False

        def status(expected: str) -> Callable[[dict[str, Any]], bool]:
            return lambda r: r.get("status") == expected

        configs = [
            Config("direct-new", "owdedup/dedup-thumbnail", new_photo, status("computed")),
            Config("direct-dup", "owdedup/dedup-thumbnail", lambda: picture,
                   status("deduplicated")),
            Config("hit", CONDUCTOR, lambda: picture, hit),
            Config("miss", CONDUCTOR, new_photo, miss),
        ]
        for config in configs:
            for _ in range(warmup):
                invoke(rest, config.action, config.payload())
        times: dict[str, list[float]] = {c.name: [] for c in configs}
        for round_ in range(invokes):
            for config in configs:
                payload = config.payload()
                started = time.perf_counter()
                result = invoke(rest, config.action, payload)
                times[config.name].append((time.perf_counter() - started) * 1000)
                if not config.expect(result):
                    raise RuntimeError(f"{config.name}: unexpected result {result}")
            console.print(f"  round {round_ + 1}/{invokes}", end="\r", highlight=False)
        made = hit_activations(rest, CONDUCTOR, picture)
        reads = fingerprint_reads(rest, invokes)
    report.times = times
    report.extra["hit_activations"] = made
    report.extra["fingerprint_ms"] = reads
    for name, ms in times.items():
        report.checks.append(common.Check(
            name, f"thumbnail: {name}",
            f"median {median(ms):.1f} ms, p95 {common.percentile(ms, 95):.1f} ms"))
    hit_ms, direct_ms = median(times["hit"]), median(times["direct-new"])
    added = median(times["miss"]) - direct_ms
    for name, ms in reads.items():
        report.checks.append(common.Check(
            f"fp.{name}", f"a hit's fingerprint reads, {name.replace('-', ' ')}",
            f"median {median(ms):.1f} ms, p95 {common.percentile(ms, 95):.1f} ms"))
    report.checks += [
        common.Check("T-hit", "hit via the conductor, median",
                     f"{hit_ms:.1f} ms (direct-new {direct_ms:.1f} ms)", hit_ms, "<=",
                     HIT_TARGET_MS),
        common.Check("T-miss", "a miss adds (median miss - median direct-new)",
                     f"{added:+.1f} ms", added, "<=", MISS_OVERHEAD_TARGET_MS),
        common.Check("T-acts", "activations of one hit", ", ".join(made) or "none",
                     float(len(made)) if set(made) <= {CONDUCTOR} else float("inf"), "<=",
                     1.0),
    ]


def save_chart(report: Report, path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = list(report.times)
    medians = [median(report.times[n]) for n in names]
    p95s = [common.percentile(report.times[n], 95) for n in names]
    colours = ["tab:gray" if "direct" in n else "tab:green" if "hit" in n else "tab:orange"
               for n in names]
    ax.barh(names, medians, color=colours,
            xerr=[[0] * len(names), [p - m for p, m in zip(p95s, medians, strict=True)]])
    ax.axvline(HIT_TARGET_MS, color="black", linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlabel("ms per blocking invoke, median (bar: to p95); dashed: 10 ms hit target")
    env = report.environment
    load = env["load_average_start"][0]
    common.save_figure(fig, f"the thumbnail through owdedup wrap, serve, warm ({env['cpu_count']} "
                       f"CPUs, load {load:.1f}, commit {env['git_commit']})", path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = common.argument_parser((__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--invokes", type=int, default=30, help="timed invokes per config")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured invokes per config")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 180)
    photo = pick_photo(args.photos)
    python = base_python()
    report = Report(common.environment([photo], {"pillow": PIL.__version__},
                                       {"base_python": python, "photo": photo.name}))
    work = Path(tempfile.mkdtemp(prefix="owdedup-bench-wrapped-thumbnail-"))
    try:
        site = prepare_runtime_site(python=python, log=console.print)
        bench(report, photo, site, work, args.invokes, args.warmup, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.environment["load_average_end"] = list(os.getloadavg())
    return common.write_outputs(
        report, args.out, console, lambda path: save_chart(report, path),
        lambda: common.print_checks(console, "the thumbnail through owdedup wrap: hit and miss "
                                    "through serve, warm (measured under the load at the time)",
                                    report.checks))


if __name__ == "__main__":
    sys.exit(main())
