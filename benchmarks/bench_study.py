"""The thumbnail study: the same photos thumbnailed sequentially, on local processes and
serverless through ``owdedup serve``, side by side (issue 12, benchmark 1).

Run from the repository root::

    .venv/bin/python benchmarks/bench_study.py --photos /work/shared/corpus/photos \\
        --out bench-results/study --limit 24 --rounds 3

Every method makes the same thumbnails (``--sizes``, JPEG quality 85, owdedup's filter) of
the same ``--limit`` photos:

- ``pillow``: the plain loop, one process (``bench_peers.run_pillow``).
- ``pool``: the same body in ``multiprocessing.Pool(N)`` (``bench_peers.run_pool``).
- ``map-Nw``, ``map-Nw-warm``: ``owdedup map --workers N`` on fresh local stores (every
  photo computed), then again on the stores it filled (every photo deduplicated).
- ``ow-cold``: ``owdedup map --platform openwhisk`` (its code, ``run_platform_map``, in this
  process) through ``owdedup serve`` just restarted (no warm container), the deployed
  ``dedup-thumbnail`` sequence (``owdedup deploy``, wskdeploy, bound to a folder store and a
  SQLite record store), every photo's record absent: every photo invoked.
- ``ow-warm``: the same, containers warm, the records removed again: every photo invoked.
- ``ow-dedup``: ``ow-warm`` re-run: every photo deduplicated by the client, zero invocations.

Serve runs with ``--containers N`` (N action processes at once, as N local workers) and its
invocation limits raised out of the way; the fan-out window is N. Every round runs every
method once, in an order rotated by one place each round; ratios are paired by round
(method / its reference in the same round): median and [min..max]. Untimed: copying the
photos into fresh buckets, removing records, restarting serve, one warm-up on a few photos.

Targets (issue 12): ``ow-warm`` within 1.15x of ``map-Nw`` (the same number of workers);
``ow-dedup`` makes 0 invocations; no object lost (a failed object stops the run). The
client's CPU per invocation is shown with the streamed hashing of every photo included
(they run here); the fan-out's own cost, the issue's 2 ms target, is ``bench_fanout.py``'s.

Outputs in ``--out``: ``results.json`` and ``chart.png``; the table is printed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL
from PIL import Image, features
from rich.console import Console

from owdedup.mapper import COMPUTED, DEDUPLICATED
from owdedup.openwhisk.client import Credentials, OpenWhiskClient
from owdedup.openwhisk.fanout import FanOut, FanOutPolicy, FanOutStats
from owdedup.openwhisk.mapping import run_platform_map
from owdedup.runtime.config import ENV_RECORDS, ENV_STORE
from owdedup.runtime.functions import get_function
from owdedup.runtime.records import open_records

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_study, and mypy
    from benchmarks import bench_fanout, bench_peers, common
else:  # python benchmarks/bench_study.py: benchmarks/ is sys.path[0]
    import bench_fanout
    import bench_peers
    import common

METHODS_LOCAL = ("pillow", "pool")
OW_METHODS = ("ow-cold", "ow-warm", "ow-dedup")
#: Issue 12's target: serverless through serve within 1.15x of local map with as many workers.
OW_TARGET = 1.15


@dataclass
class Report(common.BaseReport):
    timings_key = "wall_s_by_round"

    walls: dict[str, list[float]] = field(default_factory=dict)  # method -> seconds by round
    platform: list[dict[str, Any]] = field(default_factory=list)  # every OpenWhisk run

    def timings_json(self) -> dict[str, Any]:
        return {"walls": self.walls, "platform": self.platform}


# -- OpenWhisk through serve -------------------------------------------------------------------


class Platform:
    """``owdedup serve`` (restartable, its deployment kept in ``--state``) with the package
    deployed as a user deploys it, bound to a folder store and a SQLite record store that
    this process (the map's client side) uses too."""

    def __init__(self, work: Path, workers: int, port: int, sizes: tuple[int, ...]) -> None:
        self.work, self.workers, self.port, self.sizes = work, workers, port, sizes
        self.url = f"http://127.0.0.1:{port}"
        self.store = work / "store"
        self.records_url = f"sqlite://{work / 'records.sqlite'}"
        self.env = {**os.environ, ENV_STORE: self.store.as_uri(), ENV_RECORDS: self.records_url}
        self.process: Any = None
        self.runs = 0

    def restart(self) -> None:
        """A fresh serve: no warm container left."""
        self.stop()
        self.process = bench_fanout.start_serve(self.port, self.workers, self.work / "serve.log",
                                                state=self.work / "state")

    def stop(self) -> None:
        if self.process is not None:
            bench_fanout.stop_serve(self.process)
            self.process = None

    def deploy(self) -> None:
        project = self.work / "project"
        project.mkdir(exist_ok=True)
        shutil.copy2(common.ROOT / "manifest.yaml", project / "manifest.yaml")
        shutil.copytree(common.ROOT / "actions", project / "actions", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        env = {**self.env, "OW_APIHOST": self.url, "OW_AUTH": bench_fanout.AUTH,
               "OWDEDUP_STORE": self.store.as_uri(), "OWDEDUP_RECORDS": self.records_url,
               "OWDEDUP_OUT_BUCKET": common.DEST_BUCKET, "OWDEDUP_PYTHON": sys.executable}
        for name in ("OW_NAMESPACE", "WSK_CONFIG_FILE"):
            env.pop(name, None)
        done = subprocess.run([sys.executable, "-m", "owdedup", "deploy", "--project",
                               str(project), "--no-kafka-feed"], env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"owdedup deploy failed:\n{done.stdout}{done.stderr}")

    def fresh_bucket(self, photos: Sequence[Path]) -> tuple[str, list[str]]:
        """A new source bucket holding *photos* (no cached digests), their records removed."""
        self.runs += 1
        bucket = f"in{self.runs:03d}"
        (self.store / bucket).mkdir(parents=True)
        for photo in photos:
            shutil.copyfile(photo, self.store / bucket / photo.name)
        self.forget(photos)
        return bucket, sorted(p.name for p in photos)

    def forget(self, photos: Sequence[Path]) -> None:
        spec = get_function("thumbnail")
        params = common.thumbnail_request(self.env, "", "", self.sizes).params
        function_ids = [v.function_id for v in spec.variants(spec.normalise(dict(params)))]
        records = open_records(self.records_url, {})
        try:
            for photo in photos:
                digest = hashlib.sha256(photo.read_bytes()).hexdigest()
                for function_id in function_ids:
                    records.delete(function_id, digest)
        finally:
            records.close()

    def map(self, label: str, bucket: str, keys: list[str], computed: int,
            deduplicated: int) -> tuple[common.MapRun, FanOutStats, float]:
        """``map --platform openwhisk`` over *bucket*: its run, the fan-out's counters and
        the client's CPU seconds."""
        request = common.thumbnail_request(self.env, bucket, common.DEST_BUCKET, self.sizes)
        client = OpenWhiskClient(Credentials(self.url, bench_fanout.AUTH))
        try:
            fanout = FanOut(client, FanOutPolicy(window=self.workers))
            since_ms = int(time.time() * 1000)
            cpu = time.process_time()
            summary, report = run_platform_map(request, keys, fanout)
            cpu_s = time.process_time() - cpu
            # A sequence's own record has no initTime: its components' records say which
            # of them started a container.
            report.fanout.cold_starts = cold_starts_since(client, since_ms)
        finally:
            client.close()
        run = common.MapRun(label, self.workers, len(keys), summary.wall_s,
                            [r.ms for r in summary.results], summary.count(COMPUTED),
                            summary.count(DEDUPLICATED))
        if summary.failed or (run.computed, run.deduplicated) != (computed, deduplicated):
            first = summary.failed[0].error if summary.failed else ""
            raise RuntimeError(f"{label}: {run.computed} computed, {run.deduplicated} "
                               f"deduplicated, {len(summary.failed)} failed {first}")
        return run, report.fanout, cpu_s


def cold_starts_since(client: OpenWhiskClient, since_ms: int) -> int:
    """Activations since *since_ms* that started their container (``initTime``)."""
    records: list[dict[str, Any]] = []
    while True:
        reply = client.activations(since_ms=since_ms, skip=len(records))
        if reply.status != 200 or not isinstance(reply.body, list):
            raise RuntimeError(f"listing activations: HTTP {reply.status}")
        records += reply.body
        if len(reply.body) < 200:
            break
    return sum(any(a.get("key") == "initTime" for a in record.get("annotations", ()))
               for record in records)


# -- the methods -------------------------------------------------------------------------------


@dataclass
class Study:
    inputs: bench_peers.Inputs
    platform: Platform
    sizes: tuple[int, ...]
    report: Report

    def local(self, photos: list[Path]) -> dict[str, float]:
        return {"pillow": bench_peers.run_pillow(self.inputs, photos, self.sizes),
                "pool": bench_peers.run_pool(self.inputs, photos, self.sizes)}

    def map(self, photos: list[Path]) -> dict[str, float]:
        n = self.inputs.workers
        root = self.inputs.factory.create({p.name: p for p in photos})
        try:
            cold = bench_peers.checked_map(root, n, f"map-{n}w", self.sizes, len(photos), 0)
            warm = bench_peers.checked_map(root, n, f"map-{n}w-warm", self.sizes, 0,
                                           len(photos))
            return {cold.label: cold.wall_s, warm.label: warm.wall_s}
        finally:
            self.inputs.factory.remove(root)

    def openwhisk(self, photos: list[Path]) -> dict[str, float]:
        platform, count = self.platform, len(photos)
        platform.restart()
        walls: dict[str, float] = {}
        bucket, keys = platform.fresh_bucket(photos)
        runs = [platform.map("ow-cold", bucket, keys, count, 0)]
        bucket, keys = platform.fresh_bucket(photos)
        runs.append(platform.map("ow-warm", bucket, keys, count, 0))
        runs.append(platform.map("ow-dedup", bucket, keys, 0, count))
        for run, stats, cpu_s in runs:
            walls[run.label] = run.wall_s
            self.report.platform.append({
                "label": run.label, "objects": run.objects, "wall_s": run.wall_s,
                "invocations": stats.invocations, "cold_starts": stats.cold_starts,
                "throttled": stats.throttled, "retries": stats.retries, "lost": stats.lost,
                "platform_ms": stats.platform_ms, "client_cpu_s": cpu_s})
        return walls


def run_rounds(study: Study, rounds: int, console: Console) -> None:
    plan: list[Callable[[list[Path]], dict[str, float]]] = [study.local, study.map,
                                                            study.openwhisk]
    photos = study.inputs.photos
    console.print(f"  warm-up on {common.WARMUP_PHOTOS} photos ...", highlight=False)
    for run in plan:
        run(photos[:common.WARMUP_PHOTOS])
    study.report.platform.clear()
    orders: list[list[str]] = []
    for index in range(rounds):
        shift = index % len(plan)
        rotated = plan[shift:] + plan[:shift]
        orders.append([run.__name__ for run in rotated])
        for run in rotated:
            for method, wall in run(photos).items():
                study.report.walls.setdefault(method, []).append(wall)
        console.print(f"  round {index + 1}/{rounds} done", highlight=False)
    study.report.extra["orders"] = orders


# -- checks, table, chart ----------------------------------------------------------------------


def paired(report: Report, method: str, reference: str) -> list[float]:
    """method / reference, round by round."""
    return [a / b for a, b in zip(report.walls[method], report.walls[reference], strict=True)]


def spread(ratios: Sequence[float]) -> str:
    return f"{statistics.median(ratios):.3f}x [{min(ratios):.3f}..{max(ratios):.3f}]"


def study_checks(report: Report, workers: int) -> None:
    n = f"{workers}w"
    for method in report.walls:
        walls = report.walls[method]
        ratio = paired(report, method, "pillow")
        report.checks.append(common.Check(
            f"t.{method}", f"{method}: wall s; / pillow",
            f"{statistics.median(walls):.2f} s [{min(walls):.2f}..{max(walls):.2f}]; "
            f"{spread(ratio)}", statistics.median(ratio)))
    ratio = paired(report, "ow-warm", f"map-{n}")
    report.checks.append(common.Check(
        "s.warm", f"ow-warm / map-{n} (same workers)", spread(ratio),
        statistics.median(ratio), "<=", OW_TARGET))
    ratio = paired(report, "ow-dedup", f"map-{n}-warm")
    report.checks.append(common.Check(
        "s.dedup", f"ow-dedup / map-{n}-warm (all deduplicated)", spread(ratio),
        statistics.median(ratio)))
    invoking = [run for run in report.platform if run["invocations"]]
    per_invocation = [run["client_cpu_s"] * 1000 / run["invocations"] for run in invoking]
    # Not the 2 ms target, which is the fan-out's own cost (bench_fanout.py): here
    # every photo of a fresh bucket is also read and hashed by the client.
    report.checks.append(common.Check(
        "s.cpu", "client CPU ms per invocation (streamed hashing included)",
        f"{statistics.median(per_invocation):.2f} ms "
        f"[{min(per_invocation):.2f}..{max(per_invocation):.2f}]",
        statistics.median(per_invocation)))
    dedup_calls = [run["invocations"] for run in report.platform if run["label"] == "ow-dedup"]
    cold = [run["cold_starts"] for run in report.platform if run["label"] == "ow-cold"]
    warm = [run["cold_starts"] for run in report.platform if run["label"] == "ow-warm"]
    report.checks.append(common.Check(
        "s.calls", "invocations of ow-dedup (max over rounds)", str(max(dedup_calls)),
        float(max(dedup_calls)), "<=", 0.0))
    report.checks.append(common.Check(
        "s.cold", "cold starts: ow-cold / ow-warm (median)",
        f"{statistics.median(cold):g} / {statistics.median(warm):g}"))


def print_table(report: Report, console: Console) -> None:
    common.print_checks(console, "the thumbnail study", report.checks)
    env = report.environment
    console.print(
        f"{env['cpu_count']} CPUs ({env['cpu_model']}), Pillow {env['pillow']}, "
        f"{env['photos']} photos, sizes {env['sizes']}, {env['workers']} workers / "
        f"containers, {env['rounds']} round(s); load {env['load_average_start'][0]:.2f} -> "
        f"{env['load_average_end'][0]:.2f}. Ratios: median of the per-round ratios "
        "\\[min..max].", highlight=False)


def save_chart(report: Report, path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = list(report.walls)
    ratios = [paired(report, m, "pillow") for m in methods]
    meds = [statistics.median(r) for r in ratios]
    errors = [[med - min(r) for med, r in zip(meds, ratios, strict=True)],
              [max(r) - med for med, r in zip(meds, ratios, strict=True)]]
    colors = ["darkorange" if m.startswith("ow-") else "steelblue" for m in methods]
    bars = ax.barh(methods, meds, xerr=errors, color=colors, capsize=3)
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=4)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("wall time / Pillow loop's, same round (log; bar: median, line: spread)")
    common.save_figure(fig, f"the thumbnail study ({report.environment['photos']} photos, "
                       f"{report.environment['workers']} workers)", path)


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.argument_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="use the first N photos (0: all)")
    parser.add_argument("--workers", type=int, default=2,
                        help="N: Pool's processes, map's workers, serve's containers")
    parser.add_argument("--sizes", default=str(common.SIZE), help="e.g. 16,32,64,128,256,512")
    parser.add_argument("--port", type=int, default=0, help="serve's port (0: a free one)")
    args = parser.parse_args(argv)
    photos = common.jpeg_photos(args.photos)[: args.limit or None]
    if len(photos) < 2:
        sys.exit(f"need at least two JPEG photos in {args.photos}")
    sizes = tuple(int(s) for s in args.sizes.split(","))
    console = Console(width=None if sys.stdout.isatty() else 180)
    resample = bench_peers.owdedup_filter()
    report = Report(common.environment(
        photos, {"pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo")},
        {"resample": Image.Resampling(resample).name, "workers": args.workers,
         "rounds": args.rounds, "sizes": list(sizes)}))
    work = Path(tempfile.mkdtemp(prefix="owdedup-study-"))
    platform = Platform(work, args.workers, args.port or bench_peers._free_port(), sizes)
    inputs = bench_peers.Inputs(photos, {}, args.workers, resample, common.StoreFactory())
    try:
        console.print(f"[bold]study[/]: {len(photos)} photos, {args.rounds} round(s); "
                      "deploying to serve ...")
        platform.restart()
        platform.deploy()
        run_rounds(Study(inputs, platform, sizes, report), args.rounds, console)
    finally:
        platform.stop()
        inputs.factory.close()
        shutil.rmtree(work, ignore_errors=True)
    study_checks(report, args.workers)
    report.environment["load_average_end"] = list(os.getloadavg())
    return common.write_outputs(report, args.out, console,
                                lambda path: save_chart(report, path),
                                lambda: print_table(report, console))


if __name__ == "__main__":
    sys.exit(main())
