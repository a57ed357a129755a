"""Peer benchmark: owdedup against the plain Pillow loop, ``multiprocessing.Pool`` and Lithops,
and record lookups from 1k to 1M records, in one run.

Run from the repository root (Lithops is the optional ``bench`` extra,
``.venv/bin/pip install -e '.[dev,bench]'``)::

    .venv/bin/python benchmarks/bench_peers.py --photos /work/shared/corpus/photos \\
        --out bench-results/peers

``peers``: every method thumbnails the same photos (``--limit`` of them) into JPEG files, for
one size (256) and for six (16..512), with the same JPEG quality (85) and resampling filter
(the one ``owdedup.runtime.thumbnail`` uses, named in the output):

- ``pillow``: the plain loop, one process: per photo ``Image.open`` -> ``thumbnail`` -> ``save``;
  six sizes from one decode (each size thumbnailed from the next larger one).
- ``pool``: the same body in ``multiprocessing.Pool(N)`` (``--workers``), pool start included.
- ``lithops``: the same body in Lithops' localhost backend with N worker processes, executor
  start included; when Lithops is missing or its backend cannot run here, the row says why.
- ``cold-1w``, ``cold-Nw``: ``owdedup map thumbnail`` (``common.local_map``: a folder store and
  a SQLite record store, fresh each run) with 1 and N workers; every object a miss.
- ``warm-Nw``: the same map again on the stores ``cold-Nw`` just filled: every object a hit.
- ``halfdup-Nw``: half of the photos plus a byte copy of each under another name (the half
  carrying half of the bytes), N workers, fresh stores: the same object count as ``cold-Nw``.

Every round runs every method once per size set (all untimed preparation outside the clock),
in an order rotated by one place each round, so that outside load and cache state hit each
method alike. Ratios are paired by round (method / its reference in the same round); the
table gives their median and spread (min..max over rounds). An untimed warm-up on a few
photos comes first (page cache, imports, Lithops' runtime metadata).

``records``: for SQLite and a CouchDB-API server (``--couch-url``, else a pouchdb-server that
``owdedup.services`` starts on a free port in a temporary folder), stores of ``--record-counts``
synthetic records (six function identities per digest, loaded with ``put_many``), then
``--lookups`` rounds of ``get`` (1 key) and ``get_many`` (the 6 keys of one digest) on every
store, the stores' order rotated each round; median and p99. A CouchDB count whose load would
take longer than ``--couch-max-load-s`` at the rate measured so far is skipped, and said so.

Outputs in ``--out``: ``results.json`` (environment, every raw timing, the checks) and
``chart.png``; the table is printed. ``--only`` runs one section.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL
from PIL import Image, features
from rich.console import Console
from rich.markup import escape

from owdedup.runtime.records import RecordStore, open_records
from owdedup.runtime.thumbnail import _RESAMPLE

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_peers, and mypy
    from benchmarks import common
else:  # python benchmarks/bench_peers.py: benchmarks/ is sys.path[0]
    import common

SECTIONS = ("peers", "records")
SIZE_SETS: dict[str, tuple[int, ...]] = {"1": (common.SIZE,), "6": (16, 32, 64, 128, 256, 512)}
#: Ratio targets of issue 9: the cold path within 3% of the plain loop (5% for six sizes),
#: half duplicates at most 0.55x of all distinct, lookups flat from the smallest store up.
COLD_TARGET = {"1": 1.03, "6": 1.05}
HALFDUP_TARGET = 0.55
FLAT_TARGET = 1.5
LOOKUP_WARMUP = 50


# -- results -----------------------------------------------------------------------------------


@dataclass
class Report(common.BaseReport):
    """Raw timings: the seconds of every method run by round, and every lookup sample."""

    timings_key = "timings"

    # "<size set>/<method>" -> wall seconds of each round
    walls: dict[str, list[float]] = field(default_factory=dict)
    # "<backend>/<count>/<op>" -> milliseconds of every lookup
    lookups: dict[str, list[float]] = field(default_factory=dict)

    def timings_json(self) -> dict[str, Any]:
        return {"wall_s_by_round": self.walls, "lookup_ms": self.lookups}


# -- the peers' loop body ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoopJob:
    """What every peer method makes of one photo: these sizes, as JPEG files in *out*."""

    sizes: tuple[int, ...]
    out: str
    quality: int
    resample: int


def plain_thumbnails(path: str, job: LoopJob) -> int:
    """The plain loop's body for one photo (``common.plain_thumbnails``: open -> thumbnail
    -> save, each size from one decode), written as files; the bytes written."""
    outputs = common.plain_thumbnails(Path(path).read_bytes(), job.sizes, job.resample,
                                      job.quality)
    stem = Path(path).stem
    for size, data in zip(sorted(job.sizes, reverse=True), outputs, strict=True):
        (Path(job.out) / f"{stem}-{size}.jpg").write_bytes(data)
    return sum(map(len, outputs))


def owdedup_filter() -> int:
    """The resampling filter owdedup's thumbnails use, so that the peers do the same work."""
    return int(_RESAMPLE)


# -- the methods -------------------------------------------------------------------------------


@dataclass
class Inputs:
    """The photos of a run, their half-duplicate set, and where the outputs go."""

    photos: list[Path]
    half_dup: dict[str, Path]
    workers: int
    resample: int
    factory: common.StoreFactory
    lithops_failure: str | None = None


@contextmanager
def output_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="owdedup-peers-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def timed(body: Callable[[], object]) -> float:
    started = time.perf_counter()
    body()
    return time.perf_counter() - started


def run_pillow(inputs: Inputs, photos: list[Path], sizes: tuple[int, ...]) -> float:
    with output_folder() as out:
        job = LoopJob(sizes, str(out), common.QUALITY, inputs.resample)
        return timed(lambda: [plain_thumbnails(str(p), job) for p in photos])


def run_pool(inputs: Inputs, photos: list[Path], sizes: tuple[int, ...]) -> float:
    with output_folder() as out:
        job = LoopJob(sizes, str(out), common.QUALITY, inputs.resample)

        def body() -> None:
            with multiprocessing.Pool(inputs.workers) as pool:
                pool.starmap(plain_thumbnails, [(str(p), job) for p in photos], chunksize=1)

        return timed(body)


def lithops_config(workers: int) -> dict[str, Any]:
    """The localhost backend and storage, N worker processes, this interpreter as runtime
    (the default, ``python`` on PATH, is not the interpreter that has Pillow)."""
    return {
        "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
        "localhost": {"worker_processes": workers, "runtime": sys.executable},
    }


def run_lithops(inputs: Inputs, photos: list[Path], sizes: tuple[int, ...]) -> float:
    import lithops  # the optional bench extra: imported only here

    with output_folder() as out:
        job = LoopJob(sizes, str(out), common.QUALITY, inputs.resample)

        def body() -> None:
            executor = lithops.FunctionExecutor(config=lithops_config(inputs.workers))
            try:
                futures = executor.map(plain_thumbnails, [(str(p), job) for p in photos])
                written = executor.get_result(fs=futures)
            finally:
                executor.clean()
            if len(written) != len(photos) or not all(written):
                raise RuntimeError(f"Lithops returned {len(written)} of {len(photos)} results")

        return timed(body)


def lithops_failure(exc: BaseException) -> str:
    """Why Lithops' localhost backend did not run here, in one line."""
    if isinstance(exc, ModuleNotFoundError):
        return f"Lithops is not installed ({exc}); pip install -e '.[bench]'"
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"Lithops' localhost backend failed: {type(exc).__name__}: {first}"


def checked_map(root: Path, workers: int, label: str, sizes: tuple[int, ...],
                computed: int | None, deduplicated: int | None) -> common.MapRun:
    run = common.local_map(root, workers, label, sizes)
    if (computed is not None and run.computed != computed) or (
            deduplicated is not None and run.deduplicated != deduplicated):
        raise RuntimeError(f"{label}: {run.computed} computed, {run.deduplicated} "
                           f"deduplicated of {run.objects}")
    return run


# A unit of one round: (method names it measures, function returning their wall seconds).
Unit = tuple[tuple[str, ...], Callable[[Inputs, list[Path], tuple[int, ...]], list[float]]]


def units(workers: int) -> list[Unit]:
    n = f"{workers}w"

    def cold_1w(inputs: Inputs, photos: list[Path], sizes: tuple[int, ...]) -> list[float]:
        root = inputs.factory.create({p.name: p for p in photos})
        try:
            return [checked_map(root, 1, "cold-1w", sizes, len(photos), 0).wall_s]
        finally:
            inputs.factory.remove(root)

    def cold_warm(inputs: Inputs, photos: list[Path], sizes: tuple[int, ...]) -> list[float]:
        root = inputs.factory.create({p.name: p for p in photos})
        try:
            cold = checked_map(root, workers, f"cold-{n}", sizes, len(photos), 0)
            warm = checked_map(root, workers, f"warm-{n}", sizes, 0, len(photos))
            return [cold.wall_s, warm.wall_s]
        finally:
            inputs.factory.remove(root)

    def halfdup(inputs: Inputs, photos: list[Path], sizes: tuple[int, ...]) -> list[float]:
        root = inputs.factory.create(inputs.half_dup)
        try:
            return [checked_map(root, workers, f"halfdup-{n}", sizes, None, None).wall_s]
        finally:
            inputs.factory.remove(root)

    def lithops_unit(inputs: Inputs, photos: list[Path], sizes: tuple[int, ...]) -> list[float]:
        if inputs.lithops_failure is not None:
            return []
        try:
            return [run_lithops(inputs, photos, sizes)]
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run here is reported
            inputs.lithops_failure = lithops_failure(exc)
            return []

    return [
        (("pillow",), lambda i, p, s: [run_pillow(i, p, s)]),
        (("pool",), lambda i, p, s: [run_pool(i, p, s)]),
        (("lithops",), lithops_unit),
        (("cold-1w",), cold_1w),
        ((f"cold-{n}", f"warm-{n}"), cold_warm),
        ((f"halfdup-{n}",), halfdup),
    ]


def bench_peers(report: Report, inputs: Inputs, rounds: int, console: Console) -> None:
    plan = units(inputs.workers)
    console.print(f"  warm-up on {common.WARMUP_PHOTOS} photos ...", highlight=False)
    warm_photos = inputs.photos[:common.WARMUP_PHOTOS]
    warm_inputs = replace(inputs, half_dup=common.half_duplicates(warm_photos[:2]))
    for _, run in plan:
        run(warm_inputs, warm_photos, SIZE_SETS["6"])
    inputs.lithops_failure = warm_inputs.lithops_failure
    orders: list[list[str]] = []
    for round_index in range(rounds):
        shift = round_index % len(plan)
        rotated = plan[shift:] + plan[:shift]
        orders.append([names[0] for names, _ in rotated])
        size_sets = list(SIZE_SETS.items())
        for tag, sizes in size_sets if round_index % 2 == 0 else reversed(size_sets):
            for names, run in rotated:
                walls = run(inputs, inputs.photos, sizes)
                for name, wall in zip(names, walls, strict=False):
                    report.walls.setdefault(f"{tag}/{name}", []).append(wall)
        console.print(f"  round {round_index + 1}/{rounds} done", highlight=False)
    report.extra["orders"] = orders
    report.extra["lithops_failure"] = inputs.lithops_failure
    peer_checks(report, inputs)


def paired(report: Report, tag: str, method: str, reference: str) -> list[float]:
    """method / reference, round by round (only rounds that measured both)."""
    mine = report.walls.get(f"{tag}/{method}", [])
    theirs = report.walls.get(f"{tag}/{reference}", [])
    return [a / b for a, b in zip(mine, theirs, strict=False)]


def spread(ratios: Sequence[float]) -> str:
    return f"{statistics.median(ratios):.3f}x [{min(ratios):.3f}..{max(ratios):.3f}]"


def peer_checks(report: Report, inputs: Inputs) -> None:
    n_photos = len(inputs.photos)
    w = inputs.workers
    rows: list[tuple[str, str, str | None, float | None]] = [
        # method, what, reference (its ratio), target
        ("pillow", "plain Pillow loop, 1 process", None, None),
        ("pool", f"Pool({w}) vs Pillow loop", "pillow", None),
        ("lithops", f"Lithops localhost, {w} workers, vs Pool({w})", "pool", None),
        ("cold-1w", "owdedup cold, 1 worker, vs Pillow loop", "pillow", 0.0),
        (f"cold-{w}w", f"owdedup cold, {w} workers, vs Pool({w})", "pool", 0.0),
        (f"warm-{w}w", f"owdedup warm (all hits), {w} workers, vs cold", f"cold-{w}w", None),
        (f"halfdup-{w}w", f"owdedup half duplicates, {w} workers, vs cold", f"cold-{w}w",
         HALFDUP_TARGET),
    ]
    for tag, sizes in SIZE_SETS.items():
        label = f"{len(sizes)} size{'s' if len(sizes) > 1 else ''}"
        for method, what, reference, target in rows:
            walls = report.walls.get(f"{tag}/{method}", [])
            check_id, name = f"{tag}.{method}", f"{label}: {what}"
            if not walls:
                reason = inputs.lithops_failure if method == "lithops" else "not measured"
                report.checks.append(common.Check(check_id, name, f"not run: {reason}"))
                continue
            median = statistics.median(walls)
            measured = f"{median:.2f} s, {n_photos / median:.1f} photos/s"
            if method != "pillow":
                measured += f"; vs Pillow {spread(paired(report, tag, method, 'pillow'))}"
            ratio = None
            if reference is not None and (ratios := paired(report, tag, method, reference)):
                ratio = statistics.median(ratios)
                if reference != "pillow":
                    measured += f"; vs {reference} {spread(ratios)}"
            if target == 0.0:
                target = COLD_TARGET[tag]
            report.checks.append(common.Check(
                check_id, name, measured, ratio, "<=" if target is not None else "", target))


# -- records -----------------------------------------------------------------------------------


@dataclass
class LoadedStore:
    backend: str
    store: RecordStore
    made: common.SyntheticRecords
    load_s: float

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.made.count}"


def count_label(count: int) -> str:
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def couch_server(url: str | None, wanted: Sequence[int],
                 console: Console) -> Iterator[tuple[str, dict[str, str]]]:
    """(service URL, options): *url* with OWDEDUP_RECORDS_* options from the environment, or
    a pouchdb-server of our own on a free port in a temporary folder, stopped afterwards;
    nothing at all when no CouchDB store is *wanted*."""
    if not wanted:
        yield "", {}
        return
    if url:
        options = {k.removeprefix("OWDEDUP_RECORDS_").lower(): v for k, v in os.environ.items()
                   if k.startswith("OWDEDUP_RECORDS_")}
        yield url.rstrip("/"), options
        return
    from owdedup.services import ServicesConfig, down, up
    from owdedup.services.couchdb import couchdb_credentials

    state = Path(tempfile.mkdtemp(prefix="owdedup-peers-couch-"))
    config = replace(ServicesConfig.from_env(), state=state, couchdb_port=_free_port())
    console.print(f"  starting pouchdb-server on {config.records_url} ...", highlight=False)
    try:
        up(config, only=["couchdb"])
        # Its admin, generated into a private file of the state folder by the first start.
        username, password = couchdb_credentials(config)
        yield config.records_url.rstrip("/"), {"username": username, "password": password}
    finally:
        down(config, only=["couchdb"])
        shutil.rmtree(state, ignore_errors=True)


def load_stores(report: Report, sqlite_counts: Sequence[int], couch_counts: Sequence[int],
                couch_url: str, couch_options: dict[str, str], folder: Path,
                max_load_s: float, console: Console) -> list[LoadedStore]:
    loaded: list[LoadedStore] = []
    skipped: dict[str, str] = {}
    for count in sqlite_counts:
        store = open_records(f"sqlite://{folder / f'records-{count}.sqlite'}")
        made, load_s = common.load_records(store, count, seed=count)
        loaded.append(LoadedStore("sqlite", store, made, load_s))
        console.print(f"  sqlite: {count} records in {load_s:.1f} s", highlight=False)
    rate: float | None = None  # records per second of the last CouchDB load
    for count in couch_counts:
        if rate is not None and count / rate > max_load_s:
            skipped[f"couchdb/{count}"] = (
                f"loading {count_label(count)} records would take ~{count / rate / 60:.0f} min "
                f"at the {rate:.0f} records/s measured (limit {max_load_s / 60:.0f} min)")
            console.print(f"  couchdb: {count} skipped: {skipped[f'couchdb/{count}']}",
                          highlight=False)
            continue
        database = f"bench-peers-{count}-{os.urandom(4).hex()}"
        store = open_records(f"{couch_url}/{database}", couch_options)
        made, load_s = common.load_records(store, count, seed=count)
        rate = count / load_s
        loaded.append(LoadedStore("couchdb", store, made, load_s))
        console.print(f"  couchdb: {count} records in {load_s:.1f} s", highlight=False)
    report.extra["records_load_s"] = {s.key: s.load_s for s in loaded}
    report.extra["records_skipped"] = skipped
    return loaded


def drop_couch_databases(stores: Sequence[LoadedStore]) -> None:
    from owdedup.runtime.records.couchdb import CouchRecordStore

    for loaded in stores:
        if isinstance(loaded.store, CouchRecordStore):
            loaded.store._request("drop", "DELETE", loaded.store.path(), expect=(404,))


def bench_records(report: Report, args: argparse.Namespace, console: Console) -> None:
    folder = Path(tempfile.mkdtemp(prefix="owdedup-peers-records-"))
    stores: list[LoadedStore] = []
    try:
        with couch_server(args.couch_url, args.couch_counts, console) as (couch_url, options):
            report.environment["couchdb"] = couch_url
            stores = load_stores(report, args.record_counts, args.couch_counts, couch_url,
                                 options, folder, args.couch_max_load_s, console)
            rng = random.Random(9)
            for i in range(LOOKUP_WARMUP + args.lookups):
                shift = i % len(stores)
                for loaded in stores[shift:] + stores[:shift]:
                    one_ms, many_ms = common.time_lookups(loaded.store, loaded.made, rng)
                    if i >= LOOKUP_WARMUP:
                        report.lookups.setdefault(f"{loaded.key}/get", []).append(one_ms)
                        report.lookups.setdefault(f"{loaded.key}/get_many6", []).append(many_ms)
            drop_couch_databases(stores)
    finally:
        for loaded in stores:
            loaded.store.close()
        shutil.rmtree(folder, ignore_errors=True)
    record_checks(report, args)


def med_p99(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.3f}/{common.percentile(values, 99):.3f} ms"


def record_checks(report: Report, args: argparse.Namespace) -> None:
    for backend, counts in (("sqlite", args.record_counts), ("couchdb", args.couch_counts)):
        smallest: float | None = None
        for count in counts:
            key = f"{backend}/{count}"
            check_id, name = f"r.{backend}.{count_label(count)}", (
                f"{backend} lookups, {count_label(count)} records; "
                f"6 keys vs {count_label(counts[0])} (median)")
            if key in report.extra["records_skipped"]:
                report.checks.append(common.Check(
                    check_id, name, f"not run: {report.extra['records_skipped'][key]}"))
                continue
            one, six = report.lookups[f"{key}/get"], report.lookups[f"{key}/get_many6"]
            load_s = report.extra["records_load_s"][key]
            measured = (f"1 key {med_p99(one)}, 6 keys {med_p99(six)} (med/p99); "
                        f"put_many {load_s:.1f} s ({count / load_s:.0f}/s)")
            if smallest is None:
                smallest = statistics.median(six)
                report.checks.append(common.Check(check_id, name, measured))
                continue
            report.checks.append(common.Check(
                check_id, name, measured, statistics.median(six) / smallest, "<=", FLAT_TARGET))


# -- output ------------------------------------------------------------------------------------


def print_table(report: Report, console: Console) -> None:
    common.print_checks(console, "owdedup against its peers", report.checks)
    env = report.environment
    console.print(
        f"{env['cpu_count']} CPUs ({env['cpu_model']}), Pillow {env['pillow']}, "
        f"libjpeg-turbo {env['libjpeg_turbo']}, Python {env['python']}, filter "
        f"{env['resample']}, JPEG quality {common.QUALITY}, {env['photos']} photos, "
        f"{env['rounds']} round(s); load {env['load_average_start'][0]:.2f} -> "
        f"{env['load_average_end'][0]:.2f}. Ratios: median of the per-round ratios "
        + escape("[min..max]."), highlight=False,
    )
    if report.extra.get("lithops_failure"):
        console.print(escape(f"Lithops: {report.extra['lithops_failure']}"), highlight=False)


def save_chart(report: Report, path: Path, workers: int) -> None:
    plt = common.pyplot()  # not imported at the top: see common.pyplot
    panels = [tag for tag in SIZE_SETS if any(k.startswith(f"{tag}/") for k in report.walls)]
    has_records = bool(report.lookups)
    count = len(panels) + (1 if has_records else 0)
    if count == 0:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "nothing measured", ha="center")
        common.save_figure(fig, "owdedup against its peers", path)
        return
    fig, axes_any = plt.subplots(1, count, figsize=(6 * count, 4.8))
    axes = list(axes_any) if count > 1 else [axes_any]
    for ax, tag in zip(axes, panels, strict=False):
        methods = [m for m in ("pillow", "pool", "lithops", "cold-1w", f"cold-{workers}w",
                               f"warm-{workers}w", f"halfdup-{workers}w")
                   if report.walls.get(f"{tag}/{m}")]
        ratios = [paired(report, tag, m, "pillow") if m != "pillow" else [1.0] * len(
            report.walls[f"{tag}/pillow"]) for m in methods]
        meds = [statistics.median(r) for r in ratios]
        errors = [[med - min(r) for med, r in zip(meds, ratios, strict=True)],
                  [max(r) - med for med, r in zip(meds, ratios, strict=True)]]
        bars = ax.barh(methods, meds, xerr=errors, color="steelblue", capsize=3)
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=4)
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("wall time / Pillow loop's, same round (log; bar: median, line: spread)")
        ax.set_title(f"{len(SIZE_SETS[tag])} size(s)")
    if has_records:
        ax = axes[-1]
        keys = sorted({k.rsplit("/", 1)[0] for k in report.lookups},
                      key=lambda k: (k.split("/")[0], int(k.split("/")[1])))
        labels = [f"{k.split('/')[0]} {count_label(int(k.split('/')[1]))}" for k in keys]
        width = 0.38
        for offset, op, color in ((-width / 2, "get", "steelblue"),
                                  (width / 2, "get_many6", "darkorange")):
            xs = [i + offset for i in range(len(keys))]
            meds = [statistics.median(report.lookups[f"{k}/{op}"]) for k in keys]
            p99s = [common.percentile(report.lookups[f"{k}/{op}"], 99) for k in keys]
            ax.bar(xs, meds, width, color=color, label=f"{op} median")
            ax.scatter(xs, p99s, color="black", marker="_", s=150, zorder=3)
        ax.set_xticks(range(len(keys)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log; bar: median, dash: p99)")
        ax.set_title("record lookups by store size")
        ax.legend(fontsize=8)
    common.save_figure(fig, f"owdedup against its peers ({report.environment['cpu_count']} "
                       f"CPUs, Pillow {report.environment['pillow']})", path)


# -- main --------------------------------------------------------------------------------------


def counts(text: str) -> list[int]:
    """Comma-separated positive counts, ascending; ``none`` (or nothing) for none."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"need counts like 1000,100000, not {text!r}") from None
    if min(values) < 1 or values != sorted(values):
        raise argparse.ArgumentTypeError(f"need positive ascending counts, not {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = common.argument_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every peer method")
    parser.add_argument("--limit", type=int, default=0, help="use the first N photos (0: all)")
    parser.add_argument("--workers", type=int, default=2, help="N of Pool, Lithops and map")
    parser.add_argument("--record-counts", type=counts, default=[1000, 100_000, 1_000_000],
                        help="records in each SQLite store (comma-separated)")
    parser.add_argument("--couch-counts", type=counts, default=[1000, 100_000, 1_000_000],
                        help="records in each CouchDB database (comma-separated; none: "
                        "no CouchDB)")
    parser.add_argument("--couch-url", default="",
                        help="CouchDB-API server (default: start a pouchdb-server)")
    parser.add_argument("--couch-max-load-s", type=float, default=600,
                        help="skip a CouchDB count whose load would take longer")
    parser.add_argument("--lookups", type=int, default=1000,
                        help="lookups of each kind per store")
    common.add_only(parser, SECTIONS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sections = common.parse_sections(args.only, SECTIONS)
    photos = common.jpeg_photos(args.photos)[: args.limit or None]
    if len(photos) < 2:
        sys.exit(f"need at least two JPEG photos in {args.photos}")
    console = Console(width=None if sys.stdout.isatty() else 180)
    resample = owdedup_filter()
    versions = {"pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo")}
    report = Report(common.environment(photos, versions, {
        "resample": Image.Resampling(resample).name, "workers": args.workers,
        "rounds": args.rounds}))
    if "peers" in sections:
        console.print(f"[bold]peers[/]: {len(photos)} photos, {args.rounds} round(s) ...")
        half = common.half_split(photos, {p.name: float(p.stat().st_size) for p in photos})
        inputs = Inputs(photos, common.half_duplicates(half), args.workers, resample,
                        common.StoreFactory())
        try:
            bench_peers(report, inputs, args.rounds, console)
        finally:
            inputs.factory.close()
    if "records" in sections:
        if not args.record_counts:
            sys.exit("--record-counts: the records section needs at least one SQLite count")
        console.print("[bold]records[/]: lookups by store size ...")
        bench_records(report, args, console)
    report.environment["load_average_end"] = list(os.getloadavg())
    return common.write_outputs(report, args.out, console,
                                lambda path: save_chart(report, path, args.workers),
                                lambda: print_table(report, console))


if __name__ == "__main__":
    sys.exit(main())
