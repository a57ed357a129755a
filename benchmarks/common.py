"""What the benchmarks (``bench_local.py``, ``bench_services.py``, ``bench_peers.py``) share:
results, statistics, environment, the CPU ceiling, the thumbnail map run on fresh local
stores, synthetic records and their lookups, the command line and the outputs.

Run as scripts (``python benchmarks/bench_local.py``), the benchmarks import this module as
``common`` (``benchmarks/`` is then ``sys.path[0]``); under ``python -m benchmarks.bench_local``
and mypy it is ``benchmarks.common``.

Map workers are forked from the running script, but a fork server's workers (used when the
script runs other threads) re-import it, and with it this module: keep the imports at module
level light. matplotlib, ~0.5 s per worker start, is imported only by :func:`pyplot`.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from owdedup.mapper import COMPUTED, DEDUPLICATED, MapRequest, MapSummary, run_map
from owdedup.runtime.config import ENV_RECORDS, ENV_STORE, Settings
from owdedup.runtime.context import Context
from owdedup.runtime.functions import get_function, sequence_of
from owdedup.runtime.records import OutputRef, Record, RecordStore

SIZE = 256  # thumbnail size of every single-size measurement
QUALITY = 85  # JPEG quality of every map run (and of the loops compared with them)
SRC_BUCKET, DEST_BUCKET = "photos", "thumbs"  # of the local folder stores
SIZES_PER_DIGEST = 6  # function identities per input digest in synthetic records
WARMUP_PHOTOS = 4  # photos of the untimed warm-ups
ROOT = Path(__file__).resolve().parents[1]  # the repository


# -- results -----------------------------------------------------------------------------------


@dataclass
class Check:
    """One measurement, compared against its target when it has one."""

    id: str
    name: str
    measured: str  # human-readable value(s)
    ratio: float | None = None
    op: str = ""  # ">=" or "<="
    target: float | None = None

    @property
    def passed(self) -> bool | None:
        """Whether the ratio meets the target; None without a target."""
        if self.ratio is None or self.target is None:
            return None
        return self.ratio >= self.target if self.op == ">=" else self.ratio <= self.target


@dataclass
class MapRun:
    """One ``run_map`` call: its wall time and each object's hash + sequence time."""

    label: str  # the configuration, e.g. "miss-1w" (local) or "cold" / "warm" (services)
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


def pooled_ms(runs: Iterable[MapRun]) -> list[float]:
    """The per-object times of all *runs*, in one list."""
    return [ms for run in runs for ms in run.per_object_ms]


@dataclass
class BaseReport:
    """Everything a benchmark measured; a subclass adds its raw timings.

    ``to_json`` writes ``environment``, the subclass's timings under ``timings_key``,
    ``maps``, ``extra`` and ``checks``, in this order.
    """

    timings_key: ClassVar[str]

    environment: dict[str, Any]
    maps: list[MapRun] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    def timings_json(self) -> dict[str, Any]:
        """The subclass's raw timings, as written under ``timings_key``."""
        raise NotImplementedError

    def map_json(self, run: MapRun) -> dict[str, Any]:
        """One map run as written in ``maps``."""
        return asdict(run)

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            self.timings_key: self.timings_json(),
            "maps": [self.map_json(run) for run in self.maps],
            "extra": self.extra,
            "checks": [{**asdict(c), "passed": c.passed} for c in self.checks],
        }

    @property
    def exit_code(self) -> int:
        """1 when a check failed, else 0."""
        return 0 if all(c.passed is not False for c in self.checks) else 1


# -- statistics and environment ----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0..100) by nearest rank; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment(photos: Sequence[Path], versions: Mapping[str, Any] | None = None,
                setup: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The machine, the software and the photos of a run.

    *versions* (library versions) follow the platform, *setup* (what the run measures
    against) follows the git commit.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            check=False, cwd=ROOT,
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
        **(versions or {}),
        "git_commit": commit,
        **(setup or {}),
        "photos": len(photos),
        "photo_bytes": sum(p.stat().st_size for p in photos),
    }


def _spin(loops: int) -> int:
    total = 0
    for i in range(loops):
        total += i
    return total


def cpu_scaling(workers: int, loops: int) -> float:
    """How much faster *workers* processes run *workers* loops of pure Python arithmetic than 1
    process does: the ceiling for a parallel map at this moment.

    Another process on the machine takes its share of the CPUs; this says how much was left.
    """
    seconds: dict[int, float] = {}
    context = multiprocessing.get_context("spawn")
    for n in (1, workers):
        with ProcessPoolExecutor(max_workers=n, mp_context=context) as pool:
            list(pool.map(_spin, [1] * n))  # start the workers first
            started = time.perf_counter()
            list(pool.map(_spin, [loops] * workers))
            seconds[n] = time.perf_counter() - started
    return seconds[1] / seconds[workers]


# -- map ---------------------------------------------------------------------------------------


def thumbnail_request(env: Mapping[str, str], src: str, dest: str,
                      sizes: Sequence[int] = (SIZE,), manifest: Path | None = None) -> MapRequest:
    """The request ``owdedup map thumbnail SRC DEST --size ...`` makes (JPEG, ``QUALITY``),
    run locally (``run_map``) or on OpenWhisk (``run_platform_map``) alike."""
    spec = get_function("thumbnail")
    params: dict[str, Any] = {"sizes": ",".join(map(str, sizes)), "format": "jpeg",
                              "quality": QUALITY, "materialize": False}
    spec.normalise(params)
    return MapRequest(
        function=spec.name, sequence=f"owdedup/{sequence_of(spec.name)}",
        hash_action="owdedup/hash",
        src_bucket=src, dest_bucket=dest, params=params, manifest=manifest, env=dict(env),
    )


def thumbnail_map(env: Mapping[str, str], src: str, dest: str, keys: list[str], workers: int,
                  label: str, manifest: Path | None = None,
                  sizes: Sequence[int] = (SIZE,),
                  object_bytes: Mapping[str, int] | None = None) -> MapRun:
    """What ``owdedup map thumbnail SRC DEST --size 256 --workers N`` runs (``--size`` once
    per entry of *sizes*; *object_bytes*, the listing's sizes, as the CLI passes them);
    raises when an object failed."""
    request = thumbnail_request(env, src, dest, sizes, manifest)
    summary: MapSummary = run_map(request, keys, workers=workers, sizes=object_bytes)
    if summary.failed:
        raise RuntimeError(f"{label}: {len(summary.failed)} failed: {summary.failed[0].error}")
    return MapRun(label, workers, len(keys), summary.wall_s, [r.ms for r in summary.results],
                  summary.count(COMPUTED), summary.count(DEDUPLICATED))


class StoreFactory:
    """A fresh folder store + SQLite record store per map run, each in its own temporary
    folder."""

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


def local_map(root: Path, workers: int, label: str, sizes: Sequence[int] = (SIZE,),
              env: Mapping[str, str] | None = None) -> MapRun:
    """``thumbnail_map`` over every object of a root made by :class:`StoreFactory`; *env*
    is added to this process's environment."""
    env = {**os.environ, **(env or {}),
           ENV_STORE: (root / "store").as_uri(),
           ENV_RECORDS: f"sqlite://{root / 'records.sqlite'}"}
    context = Context(Settings.resolve({}, env))
    listed = {info.key: info.size for info in context.store.list(SRC_BUCKET, "")}
    context.close()
    return thumbnail_map(env, SRC_BUCKET, DEST_BUCKET, list(listed), workers, label,
                         sizes=sizes, object_bytes=listed)


def half_split(photos: list[Path], cost_ms: Mapping[str, float]) -> list[Path]:
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


def half_duplicates(half: Sequence[Path]) -> dict[str, Path]:
    """Object key -> photo: every photo of *half* under its name and once more as a copy."""
    return {**{p.name: p for p in half}, **{f"copy-{p.name}": p for p in half}}


def plain_thumbnails(data: bytes, sizes: Sequence[int], resample: int,
                     jpeg_quality: int) -> list[bytes]:
    """What a user writes to make several sizes from one decode, largest first: open,
    ``thumbnail`` (the first one decodes at a reduced JPEG draft scale, in place), save; each
    smaller size from a copy of the one above. JPEG bytes per size, largest first."""
    from PIL import Image  # not at the top: see the module docstring

    image: Image.Image = Image.open(io.BytesIO(data))
    outputs: list[bytes] = []
    for size in sorted(sizes, reverse=True):
        if max(image.size) > size:
            if outputs:
                image = image.copy()
            image.thumbnail((size, size), Image.Resampling(resample))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=jpeg_quality)
        outputs.append(buffer.getvalue())
    return outputs


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticRecords:
    """*count* records, :data:`SIZES_PER_DIGEST` function identities per input digest (as six
    thumbnail sizes make), made on demand: a million of them never sit in memory at once."""

    count: int
    seed: int
    function_ids: list[str]
    all_digests: list[str]

    @classmethod
    def make(cls, count: int, seed: int) -> SyntheticRecords:
        rng = random.Random(seed)
        function_ids = [rng.randbytes(32).hex() for _ in range(SIZES_PER_DIGEST)]
        digests = [rng.randbytes(32).hex() for _ in range(-(-count // SIZES_PER_DIGEST))]
        return cls(count, seed, function_ids, digests)

    @property
    def digests(self) -> list[str]:
        """The digests that have a record for every function identity."""
        return self.all_digests[: self.count // SIZES_PER_DIGEST]

    def records(self) -> Iterator[Record]:
        rng = random.Random(self.seed + 1)
        for i in range(self.count):
            fid = self.function_ids[i % SIZES_PER_DIGEST]
            digest = self.all_digests[i // SIZES_PER_DIGEST]
            size = 16 << (i % SIZES_PER_DIGEST)
            yield Record(
                function="thumbnail", function_id=fid, input_digest=digest,
                output=OutputRef("bench-none", f"thumbnail/{size}/{fid}/{digest}.jpg",
                                 rng.randint(500, 60_000), size, size * 3 // 4),
                params={"size": size, "format": "jpeg", "quality": QUALITY},
                compute_ms=rng.uniform(5, 80), input_bytes=rng.randint(100_000, 9_000_000),
                created="2025-01-01T00:00:00+00:00",
            )


def load_records(store: RecordStore, count: int, seed: int) -> tuple[SyntheticRecords, float]:
    """*count* synthetic records into *store* with ``put_many``; (them, seconds taken)."""
    made = SyntheticRecords.make(count, seed)
    started = time.perf_counter()
    created = store.put_many(made.records())
    load_s = time.perf_counter() - started
    if created != count:
        raise RuntimeError(f"put_many created {created} of {count} records in "
                           f"{store.describe()}")
    return made, load_s


def time_lookups(store: RecordStore, made: SyntheticRecords,
                 rng: random.Random) -> tuple[float, float]:
    """Milliseconds of a ``get`` of one loaded record and of a ``get_many`` of the
    :data:`SIZES_PER_DIGEST` records of one digest; raises when one was not found."""
    digest = rng.choice(made.digests)
    started = time.perf_counter()
    found = store.get(rng.choice(made.function_ids), digest)
    one_ms = (time.perf_counter() - started) * 1000
    if found is None:
        raise RuntimeError(f"{store.describe()}: a loaded record was not found")
    pairs = [(fid, digest) for fid in made.function_ids]
    started = time.perf_counter()
    many = store.get_many(pairs)
    many_ms = (time.perf_counter() - started) * 1000
    if len(many) != SIZES_PER_DIGEST:
        raise RuntimeError(f"{store.describe()}: get_many found {len(many)} of "
                           f"{SIZES_PER_DIGEST} loaded records")
    return one_ms, many_ms


# -- command line ------------------------------------------------------------------------------


def argument_parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``--photos`` and ``--out``; add ``--only`` last with :func:`add_only`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--photos", type=Path, required=True, help="folder of JPEG photos")
    parser.add_argument("--out", type=Path, required=True, help="folder for JSON and PNG")
    return parser


def add_only(parser: argparse.ArgumentParser, sections: Sequence[str]) -> None:
    parser.add_argument("--only", default=",".join(sections),
                        help=f"comma-separated subset of {', '.join(sections)}")


def parse_sections(only: str, sections: Sequence[str]) -> set[str]:
    """The sections named in ``--only``; exits on an unknown one."""
    chosen = {s.strip() for s in only.split(",") if s.strip()}
    if unknown := chosen - set(sections):
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
    return chosen


def jpeg_photos(folder: Path) -> list[Path]:
    """The JPEG files in *folder*, sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())


# -- output ------------------------------------------------------------------------------------


def print_checks(console: Console, title: str, checks: Iterable[Check]) -> None:
    """The table of the checks: value, ratio, target and PASS/FAIL."""
    table = Table(title=title)
    for column in ("", "measurement", "value", "ratio", "target", "result"):
        table.add_column(column, justify="right" if column in ("ratio", "target") else "left")
    for check in checks:
        passed = check.passed
        verdict = "-" if passed is None else "[green]PASS[/]" if passed else "[red]FAIL[/]"
        table.add_row(
            check.id, check.name, escape(check.measured),
            "" if check.ratio is None else f"{check.ratio:.3f}",
            "" if check.target is None else f"{check.op} {check.target:g}", verdict,
        )
    console.print(table)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend.

    Imported here, not at the top: spawned map workers re-import the running script as
    ``__mp_main__``, and ~0.5 s of matplotlib per worker start would inflate the map times.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, title: str, path: Path) -> None:
    """Title *fig*, lay it out, write it to *path* (PNG, 120 dpi) and close it."""
    plt = pyplot()  # already imported by whoever drew *fig*
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report: BaseReport, out: Path, console: Console,
                  save_chart: Callable[[Path], None], print_table: Callable[[], None]) -> int:
    """``results.json`` and ``chart.png`` into *out*, then the table; the exit code."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    save_chart(out / "chart.png")
    print_table()
    console.print(f"raw numbers: {out / 'results.json'}, chart: {out / 'chart.png'}",
                  highlight=False)
    return report.exit_code
