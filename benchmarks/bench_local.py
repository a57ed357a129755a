"""Local performance benchmark of owdedup against the plain Pillow loop, in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_local.py --photos ../shared/corpus/photos \\
        --out bench-results/local

Everything is measured in one run so that the ratios compare numbers taken under the same
conditions, and every comparison interleaves its two sides so that background load (other
processes may share the CPUs) hits both alike:

- In-process loops (a, b, f) are warmed up on a few photos; then, photo by photo, both sides
  run ``--repeats`` times in turn, and each photo's best time counts. A side's time is the sum
  of its per-photo bests: the best pass the machine gave, robust to bursts of outside load.
- ``map`` runs (c, d, e) use a fresh folder store and a fresh SQLite record store in a new
  temporary folder each time (the photos are copied in first, untimed); the configurations
  run in turn, ``--map-repeats`` rounds, and the best wall time of each counts. Per-object
  times pool every round. Each round also measures how much faster 2 processes are than 1 on
  pure arithmetic at that moment (``CPU ceiling``): the most (c2) could show then.

a. Pillow loop (as SeBS and the Lithops study write it): for each photo ``Image.open(path)``
   -> ``.thumbnail((256, 256))`` -> ``.save(BytesIO, "JPEG")``; one process; photos/s.
b. ``make_thumbnails(data, [256])`` on the same photos, already read into memory: pure
   thumbnailing throughput. Target: >= 0.95x of (a).
c. ``run_map`` (what ``owdedup map thumbnail SRC DEST --size 256`` runs) on an empty record
   store, so every object is a miss: 1 worker and 2 workers; wall time (including the worker
   pool's start), photos/s, per-object ms (hash + sequence) median and p95.
   Target: 2 workers >= 1.7x the photos/s of 1 worker.
d. ``run_map`` again on the same stores: every object is a hit. Target: per-object median
   <= 3% of the miss path's per-object median (1 worker each).
e. Half duplicates: 18 distinct photos + 18 byte copies of them under other names, empty
   record store, against 36 distinct photos (the 1-worker miss runs of c; ``--dup-workers``
   changes the worker count of both): equal object counts, wall-time ratio. The 18 photos are
   chosen so that their share of the thumbnailing time measured in (b) is as close to one
   half as possible (``half_dup_compute_share`` in the JSON). Target: <= 0.55x.
f. The Lithops study's workload, six sizes (16..512) per photo: their method (for each size,
   re-open the file, ``thumbnail`` once, save) against ``make_thumbnails(data, sizes)`` (one
   decode, each size derived from the next larger one). Target: ours >= 4x faster.

Outputs in ``--out``: ``results.json`` (environment, every raw timing, the checks) and
``chart.png``; the table is printed. ``--only`` runs a subset of the sections (``thumb`` =
a+b, ``map`` = c+d, ``dup`` = e, which also runs the 36-distinct baseline, ``sizes`` = f),
useful to re-run a noisy one.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import PIL
from PIL import Image, features
from rich.console import Console
from rich.table import Table

from owdedup.config import ENV_RECORDS, ENV_STORE, Settings
from owdedup.context import Context
from owdedup.functions import get_function
from owdedup.mapper import COMPUTED, DEDUPLICATED, MapRequest, MapSummary, run_map
from owdedup.thumbnail import make_thumbnails

SIZE = 256
LITHOPS_SIZES = (16, 32, 64, 128, 256, 512)
SRC_BUCKET, DEST_BUCKET = "photos", "thumbs"
SECTIONS = ("thumb", "map", "dup", "sizes")
WARMUP_PHOTOS = 4


# -- results -----------------------------------------------------------------------------------


@dataclass
class Check:
    """One measurement compared against its target."""

    id: str
    name: str
    measured: str  # human-readable value(s)
    ratio: float | None = None
    op: str = ""  # ">=" or "<="
    target: float | None = None

    @property
    def passed(self) -> bool | None:
        if self.ratio is None or self.target is None:
            return None
        return self.ratio >= self.target if self.op == ">=" else self.ratio <= self.target


@dataclass
class MapRun:
    label: str
    workers: int
    objects: int
    wall_s: float
    per_object_ms: list[float]
    computed: int
    deduplicated: int

    @property
    def overhead_s(self) -> float:
        """Wall time not spent inside any object's hash + sequence: pool start, scheduling."""
        return self.wall_s - sum(self.per_object_ms) / 1000 / self.workers


@dataclass
class Report:
    environment: dict[str, Any]
    # loop name -> photo name -> seconds of each repetition
    loops: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    maps: list[MapRun] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    def best_ms(self, loop: str) -> dict[str, float]:
        """Each photo's best time in *loop*, in ms."""
        return {name: min(times) * 1000 for name, times in self.loops[loop].items()}

    def best_s(self, loop: str) -> float:
        """The loop's time over all photos: the sum of the per-photo bests."""
        return sum(self.best_ms(loop).values()) / 1000

    def map_runs(self, label: str) -> list[MapRun]:
        return [run for run in self.maps if run.label == label]

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "loops_s": {name: {"best_total": self.best_s(name), "per_photo": times}
                        for name, times in self.loops.items()},
            "maps": [{**asdict(run), "overhead_s": run.overhead_s} for run in self.maps],
            "extra": self.extra,
            "checks": [{**asdict(c), "passed": c.passed} for c in self.checks],
        }


# -- helpers -----------------------------------------------------------------------------------


def environment(photos: Sequence[Path]) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            check=False, cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "load_average_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "git_commit": commit,
        "photos": len(photos),
        "photo_bytes": sum(p.stat().st_size for p in photos),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


Body = Callable[[Path], object]


def interleave(
    bodies: dict[str, Body], photos: Sequence[Path], repeats: int
) -> dict[str, dict[str, list[float]]]:
    """Per photo, every body in turn, *repeats* times: seconds by body, photo, repetition."""
    for path in photos[:WARMUP_PHOTOS]:
        for body in bodies.values():
            body(path)
    times: dict[str, dict[str, list[float]]] = {name: {} for name in bodies}
    for path in photos:
        for _ in range(repeats):
            for name, body in bodies.items():
                started = time.perf_counter()
                body(path)
                times[name].setdefault(path.name, []).append(time.perf_counter() - started)
    return times


# -- a, b, f: in-process loops -----------------------------------------------------------------


def pillow_thumbnail(path: Path, size: int) -> bytes:
    """The SeBS / Lithops loop body: open, thumbnail, save as JPEG."""
    with Image.open(path) as image:
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG")
    return buffer.getvalue()


def lithops_sizes(path: Path) -> list[bytes]:
    """The Lithops study's multi-size body: re-open the file for every size."""
    return [pillow_thumbnail(path, size) for size in LITHOPS_SIZES]


def ours(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    return [t.data for t in make_thumbnails(data, sizes)]


def bench_thumb(report: Report, photos: list[Path], datas: dict[Path, bytes], repeats: int) -> None:
    report.loops.update(interleave({
        "a_pillow_256": lambda path: pillow_thumbnail(path, SIZE),
        "b_ours_256": lambda path: ours(datas[path], [SIZE]),
    }, photos, repeats))
    n = len(photos)
    a, b = report.best_s("a_pillow_256"), report.best_s("b_ours_256")
    report.checks += [
        Check("a", "Pillow loop, 256 px, 1 process", f"{n / a:.2f} photos/s ({a:.2f} s)"),
        Check("b", "make_thumbnails([256]) vs Pillow loop", f"{n / b:.2f} photos/s ({b:.2f} s)",
              a / b, ">=", 0.95),
    ]


def bench_sizes(report: Report, photos: list[Path], datas: dict[Path, bytes],
                repeats: int) -> None:
    report.loops.update(interleave({
        "f_lithops_6sizes": lithops_sizes,
        "f_ours_6sizes": lambda path: ours(datas[path], LITHOPS_SIZES),
    }, photos, repeats))
    n = len(photos)
    theirs, mine = report.best_s("f_lithops_6sizes"), report.best_s("f_ours_6sizes")
    report.checks.append(Check(
        "f", "six sizes: ours vs re-open per size",
        f"theirs {n / theirs:.2f}, ours {n / mine:.2f} photos/s", theirs / mine, ">=", 4.0,
    ))


# -- c, d, e: map runs -------------------------------------------------------------------------


class StoreFactory:
    """A fresh folder store + record store per run, each in its own temporary folder."""

    def __init__(self) -> None:
        self.parent = Path(tempfile.mkdtemp(prefix="owdedup-bench-"))
        self.count = 0

    def create(self, copies: dict[str, Path]) -> Path:
        """A new root whose SRC bucket holds *copies* (object key -> source photo)."""
        self.count += 1
        root = self.parent / f"run{self.count:02d}"
        bucket = root / "store" / SRC_BUCKET
        bucket.mkdir(parents=True)
        for key, source in copies.items():
            shutil.copyfile(source, bucket / key)
        return root

    @staticmethod
    def remove(root: Path) -> None:
        shutil.rmtree(root, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.parent, ignore_errors=True)


def map_once(root: Path, workers: int, label: str) -> MapRun:
    """What ``owdedup map thumbnail photos thumbs --size 256 --workers N`` runs."""
    env = {**os.environ,
           ENV_STORE: (root / "store").as_uri(),
           ENV_RECORDS: f"sqlite://{root / 'records.sqlite'}"}
    spec = get_function("thumbnail")
    params: dict[str, Any] = {"sizes": str(SIZE), "format": "jpeg", "quality": 85,
                              "materialize": False}
    spec.normalise(params)
    context = Context(Settings.resolve({}, env))
    keys = [info.key for info in context.store.list(SRC_BUCKET, "")]
    context.close()
    request = MapRequest(
        function=spec.name, sequence=f"owdedup/{spec.sequence}", hash_action="owdedup/hash",
        src_bucket=SRC_BUCKET, dest_bucket=DEST_BUCKET, params=params, manifest=None, env=env,
    )
    summary: MapSummary = run_map(request, keys, workers=workers)
    if summary.failed:
        raise RuntimeError(f"{label}: {len(summary.failed)} failed: {summary.failed[0].error}")
    return MapRun(label, workers, len(keys), summary.wall_s, [r.ms for r in summary.results],
                  summary.count(COMPUTED), summary.count(DEDUPLICATED))


def _spin(loops: int) -> int:
    total = 0
    for i in range(loops):
        total += i
    return total


def cpu_scaling(loops: int = 4_000_000) -> float:
    """Speed-up of 2 processes over 1 on pure Python arithmetic: the ceiling for (c2) now.

    Another process on the machine takes its share of the CPUs; this says how much was left.
    """
    seconds: dict[int, float] = {}
    context = multiprocessing.get_context("spawn")
    for workers in (1, 2):
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            list(pool.map(_spin, [1] * workers))  # start the workers first
            started = time.perf_counter()
            list(pool.map(_spin, [loops, loops]))
            seconds[workers] = time.perf_counter() - started
    return seconds[1] / seconds[2]


def half_split(photos: list[Path], cost_ms: dict[str, float]) -> list[Path]:
    """Half of the photos carrying as close to half of the total cost as a greedy pass gets."""
    ordered = sorted(photos, key=lambda p: cost_ms[p.name], reverse=True)
    first: list[Path] = []
    second: list[Path] = []
    for i in range(0, len(ordered), 2):
        pair = ordered[i:i + 2]
        lighter = first if sum(cost_ms[p.name] for p in first) <= sum(
            cost_ms[p.name] for p in second) else second
        heavier = second if lighter is first else first
        lighter.append(pair[0])
        if len(pair) > 1:
            heavier.append(pair[1])
    return sorted(first)


def bench_map(report: Report, photos: list[Path], repeats: int, sections: set[str],
              dup_workers: int, cost_ms: dict[str, float]) -> None:
    factory = StoreFactory()
    distinct = {p.name: p for p in photos}
    half = half_split(photos, cost_ms) if cost_ms else photos[: len(photos) // 2]
    half_dup = {**{p.name: p for p in half}, **{f"copy-{p.name}": p for p in half}}
    if cost_ms:
        report.extra["half_dup_compute_share"] = (
            sum(cost_ms[p.name] for p in half) / sum(cost_ms.values()))
    report.extra["half_dup_photos"] = [p.name for p in half]
    try:
        warm = factory.create({p.name: p for p in photos[:WARMUP_PHOTOS]})
        map_once(warm, 2, "warm-up")  # spawn once: page cache, bytecode, imports
        factory.remove(warm)
        for _ in range(repeats):
            if "map" in sections:
                report.extra.setdefault("cpu_scaling_2_vs_1", []).append(cpu_scaling())
            configs: list[tuple[str, int, dict[str, Path]]] = []
            if "map" in sections or "dup" in sections:
                configs.append(("miss-1w", 1, distinct))
            if "map" in sections:
                configs.append(("miss-2w", 2, distinct))
            if "dup" in sections:
                configs.append((f"halfdup-{dup_workers}w", dup_workers, half_dup))
                if dup_workers != 1:
                    configs.append((f"miss-{dup_workers}w", dup_workers, distinct))
            for label, workers, copies in configs:
                root = factory.create(copies)
                report.maps.append(map_once(root, workers, label))
                if "map" in sections and label.startswith("miss-"):
                    hit_label = label.replace("miss", "hit")
                    report.maps.append(map_once(root, workers, hit_label))
                factory.remove(root)
    finally:
        factory.close()
    _map_checks(report, sections, dup_workers)


def _pooled(runs: list[MapRun]) -> list[float]:
    return [ms for run in runs for ms in run.per_object_ms]


def _map_checks(report: Report, sections: set[str], dup_workers: int) -> None:
    one = report.map_runs("miss-1w")
    n = one[0].objects
    best1 = min(r.wall_s for r in one)
    miss_ms = _pooled(one)
    if "map" in sections:
        two = report.map_runs("miss-2w")
        best2 = min(r.wall_s for r in two)
        two_ms = _pooled(two)
        hit_ms = _pooled(report.map_runs("hit-1w"))
        report.checks += [
            Check("c1", "map, all misses, 1 worker",
                  f"{best1:.2f} s, {n / best1:.2f} photos/s, per object "
                  f"{statistics.median(miss_ms):.1f}/{percentile(miss_ms, 95):.1f} ms (med/p95)"),
            Check("c2", "map, all misses, 2 workers vs 1",
                  f"{best2:.2f} s, {n / best2:.2f} photos/s, per object "
                  f"{statistics.median(two_ms):.1f}/{percentile(two_ms, 95):.1f} ms (med/p95); "
                  f"CPU ceiling {statistics.median(report.extra['cpu_scaling_2_vs_1']):.2f}x",
                  best1 / best2, ">=", 1.7),
            Check("d", "map, all hits: per-object median vs miss",
                  f"hit {statistics.median(hit_ms):.2f} ms vs miss "
                  f"{statistics.median(miss_ms):.1f} ms (p95 hit {percentile(hit_ms, 95):.2f})",
                  statistics.median(hit_ms) / statistics.median(miss_ms), "<=", 0.03),
        ]
    if "dup" in sections:
        base = min(r.wall_s for r in report.map_runs(f"miss-{dup_workers}w"))
        dup = min(r.wall_s for r in report.map_runs(f"halfdup-{dup_workers}w"))
        share = report.extra.get("half_dup_compute_share")
        note = f", compute share {share:.2f}" if share is not None else ""
        report.checks.append(Check(
            "e", f"half duplicates vs all distinct ({dup_workers} worker(s), {n} objects)",
            f"{dup:.2f} s vs {base:.2f} s{note}", dup / base, "<=", 0.55,
        ))


# -- output ------------------------------------------------------------------------------------


def print_table(report: Report, console: Console) -> None:
    table = Table(title="owdedup local benchmark")
    for column in ("", "measurement", "value", "ratio", "target", "result"):
        table.add_column(column, justify="right" if column in ("ratio", "target") else "left")
    for check in report.checks:
        passed = check.passed
        verdict = "-" if passed is None else "[green]PASS[/]" if passed else "[red]FAIL[/]"
        table.add_row(
            check.id, check.name, check.measured,
            "" if check.ratio is None else f"{check.ratio:.3f}",
            "" if check.target is None else f"{check.op} {check.target:g}", verdict,
        )
    console.print(table)
    env = report.environment
    console.print(
        f"{env['cpu_count']} CPUs ({env['cpu_model']}), Pillow {env['pillow']}, "
        f"libjpeg-turbo {env['libjpeg_turbo']}, Python {env['python']}, "
        f"load {env['load_average_start'][0]:.2f} -> {env['load_average_end'][0]:.2f}",
        highlight=False,
    )


def save_chart(report: Report, path: Path, n: int) -> None:
    # Imported here, not at the top: spawned map workers re-import this module as
    # __mp_main__, and ~0.5 s of matplotlib per worker start would inflate (c)-(e).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    throughput: dict[str, float] = {}
    names = {"a_pillow_256": "a Pillow 256", "b_ours_256": "b ours 256",
             "f_lithops_6sizes": "f Lithops 6 sizes", "f_ours_6sizes": "f ours 6 sizes"}
    for key, label in names.items():
        if key in report.loops:
            throughput[label] = n / report.best_s(key)
    for label in ("miss-1w", "miss-2w", "hit-1w", "hit-2w", "halfdup-1w"):
        runs = report.map_runs(label)
        if runs:
            throughput[f"map {label}"] = runs[0].objects / min(r.wall_s for r in runs)
    ratios = [c for c in report.checks if c.ratio is not None and c.target is not None]
    fig, axes = plt.subplots(1, 1 + len(ratios), figsize=(4 + 2.2 * len(ratios), 4.5),
                             gridspec_kw={"width_ratios": [3] + [1] * len(ratios)})
    axes = list(axes) if len(ratios) else [axes]
    ax = axes[0]
    bars = ax.barh(list(throughput), list(throughput.values()), color="steelblue")
    ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.invert_yaxis()
    ax.set_xscale("log")  # hits are ~20x faster than anything else
    ax.set_xlim(right=max(throughput.values(), default=1.0) * 3)  # room for the labels
    ax.set_xlabel("photos/s (log scale)")
    ax.set_title("throughput (best)")
    for ax, check in zip(axes[1:], ratios, strict=True):
        assert check.ratio is not None and check.target is not None
        ax.bar([check.id], [check.ratio], color="seagreen" if check.passed else "firebrick")
        ax.axhline(check.target, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"{check.id}: {check.op} {check.target:g}", fontsize=9)
        ax.set_ylim(0, max(check.ratio, check.target) * 1.25)
    fig.suptitle(f"owdedup local benchmark ({report.environment['cpu_count']} CPUs, "
                 f"Pillow {report.environment['pillow']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--photos", type=Path, required=True, help="folder of JPEG photos")
    parser.add_argument("--out", type=Path, required=True, help="folder for JSON and PNG")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repetitions per photo of the in-process loops (a, b, f)")
    parser.add_argument("--map-repeats", type=int, default=5,
                        help="rounds of map runs (c, d, e)")
    parser.add_argument("--dup-workers", type=int, default=1, help="workers for (e)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {', '.join(SECTIONS)}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    if unknown := sections - set(SECTIONS):
        sys.exit(f"unknown section(s): {', '.join(sorted(unknown))}")
    photos = sorted(p for p in args.photos.iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())
    if len(photos) < 2:
        sys.exit(f"need at least two JPEG photos in {args.photos}")
    console = Console(width=None if sys.stdout.isatty() else 140)
    report = Report(environment(photos))
    datas = {p: p.read_bytes() for p in photos}
    cost_ms: dict[str, float] = {}
    if "thumb" in sections:
        console.print("[bold]a, b[/]: thumbnail loops ...")
        bench_thumb(report, photos, datas, args.repeats)
        cost_ms = report.best_ms("b_ours_256")
    elif "dup" in sections:
        ours_256 = interleave({"b": lambda path: ours(datas[path], [SIZE])}, photos, 1)["b"]
        cost_ms = {name: min(times) * 1000 for name, times in ours_256.items()}
    if sections & {"map", "dup"}:
        console.print("[bold]c, d, e[/]: map runs ...")
        bench_map(report, photos, args.map_repeats, sections, args.dup_workers, cost_ms)
    if "sizes" in sections:
        console.print("[bold]f[/]: six sizes ...")
        bench_sizes(report, photos, datas, args.repeats)
    report.environment["load_average_end"] = list(os.getloadavg())
    report.checks.sort(key=lambda c: c.id)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    save_chart(report, args.out / "chart.png", len(photos))
    print_table(report, console)
    console.print(f"raw numbers: {args.out / 'results.json'}, chart: {args.out / 'chart.png'}",
                  highlight=False)
    return 0 if all(c.passed is not False for c in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
