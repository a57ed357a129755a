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
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL
from PIL import Image, features
from rich.console import Console

from owdedup.runtime.thumbnail import make_thumbnails

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_local, and mypy
    from benchmarks import common
else:  # python benchmarks/bench_local.py: benchmarks/ is sys.path[0]
    import common

LITHOPS_SIZES = (16, 32, 64, 128, 256, 512)
SECTIONS = ("thumb", "map", "dup", "sizes")
CPU_SCALING_LOOPS = 4_000_000


# -- results -----------------------------------------------------------------------------------


@dataclass
class Report(common.BaseReport):
    """The results; raw timings: each in-process loop's seconds, by photo and repetition."""

    timings_key = "loops_s"

    # loop name -> photo name -> seconds of each repetition
    loops: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def best_ms(self, loop: str) -> dict[str, float]:
        """Each photo's best time in *loop*, in ms."""
        return {name: min(times) * 1000 for name, times in self.loops[loop].items()}

    def best_s(self, loop: str) -> float:
        """The loop's time over all photos: the sum of the per-photo bests."""
        return sum(self.best_ms(loop).values()) / 1000

    def map_runs(self, label: str) -> list[common.MapRun]:
        return [run for run in self.maps if run.label == label]

    def timings_json(self) -> dict[str, Any]:
        return {name: {"best_total": self.best_s(name), "per_photo": times}
                for name, times in self.loops.items()}

    def map_json(self, run: common.MapRun) -> dict[str, Any]:
        return {**super().map_json(run), "overhead_s": run.overhead_s}


# -- helpers -----------------------------------------------------------------------------------


Body = Callable[[Path], object]


def interleave(
    bodies: dict[str, Body], photos: Sequence[Path], repeats: int
) -> dict[str, dict[str, list[float]]]:
    """Per photo, every body in turn, *repeats* times: seconds by body, photo, repetition."""
    for path in photos[:common.WARMUP_PHOTOS]:
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
        "a_pillow_256": lambda path: pillow_thumbnail(path, common.SIZE),
        "b_ours_256": lambda path: ours(datas[path], [common.SIZE]),
    }, photos, repeats))
    n = len(photos)
    a, b = report.best_s("a_pillow_256"), report.best_s("b_ours_256")
    report.checks += [
        common.Check("a", "Pillow loop, 256 px, 1 process",
                     f"{n / a:.2f} photos/s ({a:.2f} s)"),
        common.Check("b", "make_thumbnails([256]) vs Pillow loop",
                     f"{n / b:.2f} photos/s ({b:.2f} s)", a / b, ">=", 0.95),
    ]


def bench_sizes(report: Report, photos: list[Path], datas: dict[Path, bytes],
                repeats: int) -> None:
    report.loops.update(interleave({
        "f_lithops_6sizes": lithops_sizes,
        "f_ours_6sizes": lambda path: ours(datas[path], LITHOPS_SIZES),
    }, photos, repeats))
    n = len(photos)
    theirs, mine = report.best_s("f_lithops_6sizes"), report.best_s("f_ours_6sizes")
    report.checks.append(common.Check(
        "f", "six sizes: ours vs re-open per size",
        f"theirs {n / theirs:.2f}, ours {n / mine:.2f} photos/s", theirs / mine, ">=", 4.0,
    ))


# -- c, d, e: map runs -------------------------------------------------------------------------


def bench_map(report: Report, photos: list[Path], repeats: int, sections: set[str],
              dup_workers: int, cost_ms: dict[str, float]) -> None:
    factory = common.StoreFactory()
    distinct = {p.name: p for p in photos}
    half = common.half_split(photos, cost_ms) if cost_ms else photos[: len(photos) // 2]
    half_dup = common.half_duplicates(half)
    if cost_ms:
        report.extra["half_dup_compute_share"] = (
            sum(cost_ms[p.name] for p in half) / sum(cost_ms.values()))
    report.extra["half_dup_photos"] = [p.name for p in half]
    try:
        warm = factory.create({p.name: p for p in photos[:common.WARMUP_PHOTOS]})
        common.local_map(warm, 2, "warm-up")  # spawn once: page cache, bytecode, imports
        factory.remove(warm)
        for _ in range(repeats):
            if "map" in sections:
                report.extra.setdefault("cpu_scaling_2_vs_1", []).append(
                    common.cpu_scaling(2, CPU_SCALING_LOOPS))
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
                report.maps.append(common.local_map(root, workers, label))
                if "map" in sections and label.startswith("miss-"):
                    hit_label = label.replace("miss", "hit")
                    report.maps.append(common.local_map(root, workers, hit_label))
                factory.remove(root)
    finally:
        factory.close()
    _map_checks(report, sections, dup_workers)


def _map_checks(report: Report, sections: set[str], dup_workers: int) -> None:
    one = report.map_runs("miss-1w")
    n = one[0].objects
    best1 = min(r.wall_s for r in one)
    miss_ms = common.pooled_ms(one)
    if "map" in sections:
        two = report.map_runs("miss-2w")
        best2 = min(r.wall_s for r in two)
        two_ms = common.pooled_ms(two)
        hit_ms = common.pooled_ms(report.map_runs("hit-1w"))
        report.checks += [
            common.Check(
                "c1", "map, all misses, 1 worker",
                f"{best1:.2f} s, {n / best1:.2f} photos/s, per object "
                f"{statistics.median(miss_ms):.1f}/{common.percentile(miss_ms, 95):.1f} ms "
                "(med/p95)"),
            common.Check(
                "c2", "map, all misses, 2 workers vs 1",
                f"{best2:.2f} s, {n / best2:.2f} photos/s, per object "
                f"{statistics.median(two_ms):.1f}/{common.percentile(two_ms, 95):.1f} ms "
                "(med/p95); "
                f"CPU ceiling {statistics.median(report.extra['cpu_scaling_2_vs_1']):.2f}x",
                best1 / best2, ">=", 1.7),
            common.Check(
                "d", "map, all hits: per-object median vs miss",
                f"hit {statistics.median(hit_ms):.2f} ms vs miss "
                f"{statistics.median(miss_ms):.1f} ms "
                f"(p95 hit {common.percentile(hit_ms, 95):.2f})",
                statistics.median(hit_ms) / statistics.median(miss_ms), "<=", 0.03),
        ]
    if "dup" in sections:
        base = min(r.wall_s for r in report.map_runs(f"miss-{dup_workers}w"))
        dup = min(r.wall_s for r in report.map_runs(f"halfdup-{dup_workers}w"))
        share = report.extra.get("half_dup_compute_share")
        note = f", compute share {share:.2f}" if share is not None else ""
        report.checks.append(common.Check(
            "e", f"half duplicates vs all distinct ({dup_workers} worker(s), {n} objects)",
            f"{dup:.2f} s vs {base:.2f} s{note}", dup / base, "<=", 0.55,
        ))


# -- output ------------------------------------------------------------------------------------


def print_table(report: Report, console: Console) -> None:
    common.print_checks(console, "owdedup local benchmark", report.checks)
    env = report.environment
    console.print(
        f"{env['cpu_count']} CPUs ({env['cpu_model']}), Pillow {env['pillow']}, "
        f"libjpeg-turbo {env['libjpeg_turbo']}, Python {env['python']}, "
        f"load {env['load_average_start'][0]:.2f} -> {env['load_average_end'][0]:.2f}",
        highlight=False,
    )


def save_chart(report: Report, path: Path, n: int) -> None:
    plt = common.pyplot()  # not imported at the top: see common.pyplot
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
    common.save_figure(fig, f"owdedup local benchmark ({report.environment['cpu_count']} "
                       f"CPUs, Pillow {report.environment['pillow']})", path)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = common.argument_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="repetitions per photo of the in-process loops (a, b, f)")
    parser.add_argument("--map-repeats", type=int, default=5,
                        help="rounds of map runs (c, d, e)")
    parser.add_argument("--dup-workers", type=int, default=1, help="workers for (e)")
    common.add_only(parser, SECTIONS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sections = common.parse_sections(args.only, SECTIONS)
    photos = common.jpeg_photos(args.photos)
    if len(photos) < 2:
        sys.exit(f"need at least two JPEG photos in {args.photos}")
    console = Console(width=None if sys.stdout.isatty() else 140)
    versions = {"pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo")}
    report = Report(common.environment(photos, versions))
    datas = {p: p.read_bytes() for p in photos}
    cost_ms: dict[str, float] = {}
    if "thumb" in sections:
        console.print("[bold]a, b[/]: thumbnail loops ...")
        bench_thumb(report, photos, datas, args.repeats)
        cost_ms = report.best_ms("b_ours_256")
    elif "dup" in sections:
        ours_256 = interleave(
            {"b": lambda path: ours(datas[path], [common.SIZE])}, photos, 1)["b"]
        cost_ms = {name: min(times) * 1000 for name, times in ours_256.items()}
    if sections & {"map", "dup"}:
        console.print("[bold]c, d, e[/]: map runs ...")
        bench_map(report, photos, args.map_repeats, sections, args.dup_workers, cost_ms)
    if "sizes" in sections:
        console.print("[bold]f[/]: six sizes ...")
        bench_sizes(report, photos, datas, args.repeats)
    report.environment["load_average_end"] = list(os.getloadavg())
    report.checks.sort(key=lambda c: c.id)

    return common.write_outputs(report, args.out, console,
                                lambda path: save_chart(report, path, len(photos)),
                                lambda: print_table(report, console))


if __name__ == "__main__":
    sys.exit(main())
