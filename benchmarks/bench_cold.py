"""The cold path of ``map`` against a plain Pillow loop at equal settings, paired by round.

Run from the repository root::

    .venv/bin/python benchmarks/bench_cold.py --photos ../shared/corpus/photos \\
        --out bench-results/cold

Six methods, each round in a rotated order (round r starts with method r mod 6), so that
background load on a shared machine falls on every method alike:

- ``pillow-1``: one process, for each photo ``Image.open`` -> ``thumbnail((256, 256))`` with
  the runtime's filter and reducing gap -> ``save`` as JPEG at quality 85 into a file;
- ``map-1w``: ``run_map`` with 1 worker (what ``owdedup map thumbnail photos thumbs --size 256
  --workers 1`` runs) on a fresh folder store and an empty SQLite record store: every object
  is hashed, computed, written and recorded; the wall time includes starting the workers;
- ``pool-2``: ``multiprocessing.Pool(2)`` (started and closed inside the timing) running the
  plain loop's body over the photos;
- ``map-2w``: ``run_map`` with 2 workers, as ``map-1w``;
- ``map-1w-glibc``, ``map-2w-glibc``: the same with ``OWDEDUP_KEEP_HEAP_MB=0``, the workers
  on the C library's default allocator settings, as the two loops are. ``map``'s workers keep
  the memory a decode frees for the next image (``owdedup.allocator``), which the loops do
  not: these two show what owdedup itself costs over the loops, like for like.

Each round gives the ratios map-1w / pillow-1 and map-2w / pool-2 (target: <= 1.03), and the
same for the ``-glibc`` runs (no target); the table shows their median and spread over the
rounds. Then one more run each of ``pool-2`` and
``map-2w`` while a separate process samples this process and all its descendants every 20 ms:
the peak of their summed proportional set size (PSS), and the sum of each process's peak RSS
(VmHWM) (target: map-2w <= 1.3x pool-2).

Outputs in ``--out``: ``results.json`` and ``chart.png`` (the ratios by round); the table is
printed.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL
from PIL import Image
from rich.console import Console

from owdedup.runtime import thumbnail

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_cold, and mypy
    from benchmarks import common
else:  # python benchmarks/bench_cold.py: benchmarks/ is sys.path[0]
    import common

QUALITY = 85
METHODS = ("pillow-1", "map-1w", "pool-2", "map-2w", "map-1w-glibc", "map-2w-glibc")
PAIRS = (("map-1w", "pillow-1"), ("map-2w", "pool-2"))
LIKE_FOR_LIKE = (("map-1w-glibc", "pillow-1"), ("map-2w-glibc", "pool-2"))
DEFAULT_HEAP = {"OWDEDUP_KEEP_HEAP_MB": "0"}


def plain_thumbnail(job: tuple[Path, Path]) -> int:
    """The plain loop's body: open, thumbnail, save; the runtime's filter and quality."""
    source, target = job
    with Image.open(source) as image:
        image.thumbnail((common.SIZE, common.SIZE), thumbnail._RESAMPLE,
                        reducing_gap=thumbnail._REDUCING_GAP)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=QUALITY)
    target.write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


class Methods:
    """Each method as a callable returning its wall time in seconds."""

    def __init__(self, photos: list[Path], factory: common.StoreFactory) -> None:
        self.photos = photos
        self.factory = factory

    def _jobs(self) -> list[tuple[Path, Path]]:
        out = self.factory.create({})
        (out / "thumbs").mkdir()
        return [(p, out / "thumbs" / f"{p.stem}_{common.SIZE}.jpg") for p in self.photos]

    def pillow_1(self) -> float:
        jobs = self._jobs()
        started = time.perf_counter()
        for job in jobs:
            plain_thumbnail(job)
        return time.perf_counter() - started

    def pool_2(self) -> float:
        jobs = self._jobs()
        started = time.perf_counter()
        with multiprocessing.Pool(2) as pool:
            list(pool.imap_unordered(plain_thumbnail, jobs))
        return time.perf_counter() - started

    def map_n(self, workers: int, env: dict[str, str] | None = None) -> float:
        root = self.factory.create({p.name: p for p in self.photos})
        try:
            run = common.local_map(root, workers, f"cold-{workers}w", env=env)
        finally:
            self.factory.remove(root)
        if run.computed != len(self.photos):
            raise RuntimeError(f"map computed {run.computed} of {len(self.photos)}")
        return run.wall_s

    def table(self) -> dict[str, Callable[[], float]]:
        return {"pillow-1": self.pillow_1, "map-1w": lambda: self.map_n(1),
                "pool-2": self.pool_2, "map-2w": lambda: self.map_n(2),
                "map-1w-glibc": lambda: self.map_n(1, DEFAULT_HEAP),
                "map-2w-glibc": lambda: self.map_n(2, DEFAULT_HEAP)}


# -- memory --------------------------------------------------------------------------------------


def _tree(root: int) -> list[int]:
    """*root* and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _field_kib(path: str, name: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0  # the process is gone


def sample_tree(root: int) -> None:
    """``--sample-tree PID``: until stdin closes, sample the tree of *PID*; then print the peak
    of its summed PSS and the sum of each process's peak RSS (VmHWM, which the kernel keeps,
    so a late sample still sees it), in KiB."""
    import select

    pss_peak, hwm = 0, dict[int, int]()
    while True:
        pids = _tree(root)
        pss_peak = max(pss_peak, sum(_field_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
        for pid in pids:
            hwm[pid] = max(hwm.get(pid, 0), _field_kib(f"/proc/{pid}/status", "VmHWM:"))
        ready, _, _ = select.select([sys.stdin], [], [], 0.02)
        if ready and not sys.stdin.read(1):
            break
    print(pss_peak, sum(hwm.values()))


def tree_memory_mib(body: Callable[[], float]) -> dict[str, float]:
    """Run *body* while a separate process samples this process tree (a thread here would
    change how ``map`` starts its workers: see ``owdedup.workpool``)."""
    sampler = subprocess.Popen([sys.executable, __file__, "--sample-tree", str(os.getpid())],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)  # the sampler's own start-up
    body()
    out, _ = sampler.communicate("")
    pss, hwm = (int(v) / 1024 for v in out.split())
    return {"pss_peak": pss, "rss_peaks_summed": hwm}


# -- main ----------------------------------------------------------------------------------------


@dataclass
class Report(common.BaseReport):
    """Raw timings: each method's wall time per round; memory under ``extra``."""

    timings_key = "rounds_s"

    times: dict[str, list[float]] = field(default_factory=dict)

    def timings_json(self) -> dict[str, Any]:
        return self.times

    def ratios(self, ours: str, peer: str) -> list[float]:
        return [a / b for a, b in zip(self.times[ours], self.times[peer], strict=True)]


def run(report: Report, photos: list[Path], rounds: int, console: Console) -> None:
    factory = common.StoreFactory()
    table = Methods(photos, factory).table()
    try:
        for name in METHODS:  # warm-up: page cache, bytecode, imports
            table[name]()
        times: dict[str, list[float]] = {name: [] for name in METHODS}
        for index in range(rounds):
            order = METHODS[index % len(METHODS):] + METHODS[:index % len(METHODS)]
            for name in order:
                times[name].append(table[name]())
            console.print(f"round {index + 1}: " + ", ".join(
                f"{name} {times[name][-1]:.2f} s" for name in METHODS), highlight=False)
        report.times = times
        report.extra["tree_memory_mib"] = {
            name: tree_memory_mib(table[name]) for name in ("pool-2", "map-2w")}
    finally:
        factory.close()
    for ident, (ours, peer) in zip(("t1", "t2"), PAIRS, strict=True):
        ratios = report.ratios(ours, peer)
        report.checks.append(common.Check(
            ident, f"cold {ours} / {peer}, paired by round",
            f"median {statistics.median(times[ours]):.2f} s vs "
            f"{statistics.median(times[peer]):.2f} s; ratio spread "
            f"{min(ratios):.3f}..{max(ratios):.3f}",
            statistics.median(ratios), "<=", 1.03))
    for ident, (ours, peer) in zip(("l1", "l2"), LIKE_FOR_LIKE, strict=True):
        ratios = report.ratios(ours, peer)
        report.checks.append(common.Check(
            ident, f"like for like: {ours} / {peer}",
            f"median {statistics.median(times[ours]):.2f} s; ratio spread "
            f"{min(ratios):.3f}..{max(ratios):.3f}", statistics.median(ratios)))
    memory = report.extra["tree_memory_mib"]
    for ident, measure, label in (("m1", "pss_peak", "tree PSS, peak"),
                                  ("m2", "rss_peaks_summed", "tree, peak RSS per process summed")):
        ours_mib, peer_mib = memory["map-2w"][measure], memory["pool-2"][measure]
        report.checks.append(common.Check(
            ident, f"{label}: map-2w / pool-2", f"{ours_mib:.0f} MiB vs {peer_mib:.0f} MiB",
            ours_mib / peer_mib, "<=", 1.3))


def save_chart(report: Report, path: Path) -> None:
    plt = common.pyplot()  # not imported at the top: see common.pyplot
    fig, ax = plt.subplots(figsize=(7, 4))
    for ours, peer in PAIRS + LIKE_FOR_LIKE:
        ratios = report.ratios(ours, peer)
        ax.plot(range(1, len(ratios) + 1), ratios, marker="o", label=f"{ours} / {peer}",
                linestyle=":" if ours.endswith("-glibc") else "-")
    ax.axhline(1.03, color="black", linestyle="--", linewidth=1, label="target 1.03")
    ax.set_xlabel("round")
    ax.set_ylabel("wall-time ratio")
    ax.legend()
    common.save_figure(fig, "owdedup map cold path vs plain Pillow", path)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--sample-tree"]:
        sample_tree(int(args[1]))
        return 0
    parser = common.argument_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the six methods")
    options = parser.parse_args(args)
    photos = common.jpeg_photos(options.photos)
    console = Console(width=None if sys.stdout.isatty() else 140)
    report = Report(common.environment(photos, {"pillow": PIL.__version__}))
    run(report, photos, options.rounds, console)
    return common.write_outputs(
        report, options.out, console, lambda path: save_chart(report, path),
        lambda: common.print_checks(console, f"owdedup map cold path ({len(photos)} photos, "
                                             f"{options.rounds} rounds)", report.checks))


if __name__ == "__main__":
    sys.exit(main())
