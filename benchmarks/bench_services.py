"""Benchmark of owdedup against real services: MinIO (S3 API) and a CouchDB-API record store.

Run from the repository root, with the local services up (``owdedup services up``)::

    .venv/bin/python benchmarks/bench_services.py --photos /work/shared/corpus/photos \\
        --out bench-results/services

The endpoints and the MinIO credentials come from the environment (``eval "$(owdedup
services env)"``) or, when ``OWDEDUP_STORE`` is not set there, from the running local
services themselves. Everything the run creates is named ``bench-<random>`` (buckets and
databases) and deleted at the end; ``inbucket``/``outbucket`` are never touched. The photos
are first uploaded into a fresh bucket through the S3 store's ``put``, so each object carries
its SHA-256 checksum and ``hash`` never reads a body.

Other processes may share the CPUs (and the services share them with the benchmark): the load
average is printed at the start and the end, with a warning when it was high; comparisons
interleave their sides so that outside load hits both alike.

1. Per-object latency, in this process, of ``owdedup/dedup-thumbnail`` (hash -> lookup ->
   thumbnail -> record) run by ``local_executor("manifest.yaml", env)``, size 256. Each of
   ``--rounds`` rounds uses a fresh record database and output bucket; photo by photo, the
   first invocation is a MISS (HEAD with checksum, record GET, GET of the body, decode +
   resize + encode, PUT of the output, record PUT) and the next ``--hit-repeats`` are HITs
   (HEAD with checksum, record GET, HEAD of the recorded output, which ``lookup`` checks
   still exists). Between the hits the hit path's parts are timed directly on the same
   connections: ``store.head()`` of the input (with the checksum), ``records.get_many()`` of
   1 id, ``store.exists()`` of the output; "rest" is the hit median minus the three part
   medians (the engine, four actions, parameter merging, log capture). Median and p95 pool
   every sample; a warm-up on a throw-away database and bucket comes first (imports,
   connections).
2. ``run_map`` (what ``owdedup map thumbnail SRC DEST --size 256 --workers N`` runs) with 1, 2
   and 4 worker processes: COLD on an empty record database (every object a miss), then WARM
   on the same database (every object a hit); a fresh database and output bucket per worker
   count and round, ``--map-repeats`` rounds, best wall time counts (it includes starting the
   worker pool); per-object ms (hash + sequence) pools every round. Each round also measures
   how much faster 2 and 4 processes are than 1 on pure arithmetic at that moment (``CPU
   ceiling``): the most a parallel run could show then.
3. Record-store lookup latency with ``--small`` (1k) and ``--large`` (100k) synthetic records
   in two databases (loaded with ``put_many``; six function identities per input digest, as
   six thumbnail sizes would make): ``get`` of an existing id and ``get_many`` of the 6 ids of
   one digest, ``--lookups`` of each per database, the two databases alternating lookup by
   lookup. Median and p95; the large/small ratio of the medians must stay <= 1.5 (flat).

Outputs in ``--out``: ``results.json`` (environment, every raw timing, the checks) and
``chart.png``; the table is printed. ``--only`` runs a subset of the sections (``path`` = 1,
``map`` = 2, ``records`` = 3).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from owdedup.engine.executor import Engine
from owdedup.engine.local import local_executor
from owdedup.mapper import COMPUTED, DEDUPLICATED
from owdedup.runtime import action as owdedup_action
from owdedup.runtime.config import ENV_OUT_BUCKET, ENV_RECORDS, ENV_STORE, Settings
from owdedup.runtime.context import Context
from owdedup.runtime.records import RecordStore, open_records
from owdedup.runtime.records.couchdb import CouchRecordStore, parse_url
from owdedup.runtime.stores import ObjectStore, open_store

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_services, and mypy
    from benchmarks import common
else:  # python benchmarks/bench_services.py: benchmarks/ is sys.path[0]
    import common

SEQUENCE = "owdedup/dedup-thumbnail"
SECTIONS = ("path", "map", "records")
MAP_WORKERS = (1, 2, 4)
CPU_SCALING_LOOPS = 2_000_000
FLAT_TARGET = 1.5
STORE_OPTION_PREFIX = "OWDEDUP_STORE_"
RECORDS_OPTION_PREFIX = "OWDEDUP_RECORDS_"


# -- results -----------------------------------------------------------------------------------


@dataclass
class Report(common.BaseReport):
    """The results; raw timings: the milliseconds of every sample of sections 1 and 3."""

    timings_key = "samples_ms"

    # series name -> milliseconds of every sample (section 1 and 3)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, series: str, ms: float) -> None:
        self.samples.setdefault(series, []).append(ms)

    def med(self, series: str) -> float:
        return statistics.median(self.samples[series])

    def p95(self, series: str) -> float:
        return common.percentile(self.samples[series], 95)

    def map_runs(self, label: str, workers: int) -> list[common.MapRun]:
        return [r for r in self.maps if r.label == label and r.workers == workers]

    def timings_json(self) -> dict[str, Any]:
        return {
            name: {"median": self.med(name), "p95": self.p95(name), "n": len(values),
                   "values": values}
            for name, values in self.samples.items()
        }


# -- helpers -----------------------------------------------------------------------------------


def med_p95(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} / {common.percentile(values, 95):.2f} ms"


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def environment(photos: Sequence[Path], store_url: str, records_url: str) -> dict[str, Any]:
    return common.environment(photos, setup={
        "store": store_url,
        "records": records_url,
        "couchdb_server": _server_banner(records_url),
    })


def load_note(load: float, cpus: int) -> str:
    return f"{load:.2f} ({'HIGH: ' if load > 0.5 * cpus else ''}{load / cpus:.0%} of {cpus} CPUs)"


def random_name(kind: str) -> str:
    """``bench-<kind>-<random>``: valid as an S3 bucket and as a CouchDB database name."""
    return f"bench-{kind}-{os.urandom(4).hex()}"


# -- services: configuration, buckets and databases -------------------------------------------


def service_environment() -> dict[str, str]:
    """OWDEDUP_* of the environment, or those of the running local services."""
    if os.environ.get(ENV_STORE):
        return {k: v for k, v in os.environ.items() if k.startswith("OWDEDUP_")}
    from owdedup.services.config import ServicesConfig
    from owdedup.services.processes import env_vars, status

    config = ServicesConfig.from_env()
    down = [name for name in ("minio", "couchdb") if not status(config, name).ready]
    if down:
        sys.exit(f"{', '.join(down)} not running: start them with `owdedup services up`")
    return env_vars(config)


def _records_auth_header() -> dict[str, str]:
    user = os.environ.get(RECORDS_OPTION_PREFIX + "USERNAME", "")
    password = os.environ.get(RECORDS_OPTION_PREFIX + "PASSWORD", "")
    if not user:
        return {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _couch(method: str, url: str) -> tuple[int, Any]:
    """One request to the CouchDB API: (status, parsed JSON body or None)."""
    request = urllib.request.Request(url, method=method, headers=_records_auth_header())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _server_banner(records_url: str) -> str:
    try:
        service, _ = parse_url(records_url)
        _, body = _couch("GET", service + "/")
    except (OSError, ValueError):
        return "?"
    if not isinstance(body, dict):
        return "?"
    vendor = body.get("vendor") or {}
    return f"{vendor.get('name', body.get('couchdb', '?'))} {body.get('version', '')}".strip()


class Resources:
    """Creates ``bench-*`` buckets and databases, and deletes every one of them at the end."""

    def __init__(self, store: ObjectStore, store_url: str, records_service: str) -> None:
        self.store = store
        self.store_url = store_url
        self.records_service = records_service
        self.buckets: list[str] = []
        self.databases: list[str] = []
        self.history: dict[str, list[str]] = {"buckets": [], "databases": []}

    def bucket(self, kind: str) -> str:
        name = random_name(kind)
        self.store.ensure_bucket(name)
        self.buckets.append(name)
        self.history["buckets"].append(name)
        return name

    def database(self, kind: str) -> tuple[str, str]:
        """(name, record-store URL) of a new, empty database."""
        name = random_name(kind)
        status, _ = _couch("PUT", f"{self.records_service}/{name}")
        if status not in (201, 202):
            raise RuntimeError(f"cannot create database {name}: HTTP {status}")
        self.databases.append(name)
        self.history["databases"].append(name)
        return name, f"{self.records_service}/{name}"

    def drop_bucket(self, name: str) -> None:
        assert name.startswith("bench-"), name  # never inbucket/outbucket
        for info in list(self.store.list(name)):
            self.store.delete(name, info.key)
        _remove_bucket(self.store_url, name)
        if name in self.buckets:
            self.buckets.remove(name)

    def drop_database(self, name: str) -> None:
        assert name.startswith("bench-"), name
        # Hit counters buffered in this process would re-create the database when flushed.
        owdedup_action._CONTEXTS.close()
        _couch("DELETE", f"{self.records_service}/{name}")
        if name in self.databases:
            self.databases.remove(name)

    def close(self) -> list[str]:
        """Delete what is left; the names that could not be deleted."""
        owdedup_action._CONTEXTS.close()
        failed = []
        for bucket in list(self.buckets):
            try:
                self.drop_bucket(bucket)
            except Exception as exc:  # noqa: BLE001 - report and carry on cleaning
                failed.append(f"bucket {bucket}: {exc}")
        for database in list(self.databases):
            self.drop_database(database)
        # A database that a late counter flush re-created is gone too.
        _, names = _couch("GET", f"{self.records_service}/_all_dbs")
        for name in names or []:
            if name in self.history["databases"]:
                _couch("DELETE", f"{self.records_service}/{name}")
                failed.append(f"database {name} re-appeared after deletion (deleted again)")
        return failed


def _remove_bucket(store_url: str, bucket: str) -> None:
    """RemoveBucket: not part of the ObjectStore interface, so with the minio client."""
    from minio import Minio

    from owdedup.runtime.stores.s3 import parse_endpoint

    endpoint = parse_endpoint(store_url)
    client = Minio(
        endpoint.netloc, secure=endpoint.secure,
        access_key=os.environ.get(STORE_OPTION_PREFIX + "ACCESS_KEY"),
        secret_key=os.environ.get(STORE_OPTION_PREFIX + "SECRET_KEY"),
    )
    client.remove_bucket(bucket)


def store_options() -> dict[str, str]:
    return dict(Settings.resolve({}, os.environ).store_options)


def run_env(base: Mapping[str, str], records_url: str, dest_bucket: str) -> dict[str, str]:
    """The environment the manifest's $VARs are bound from, for one fresh database."""
    return {**base, ENV_RECORDS: records_url, ENV_OUT_BUCKET: dest_bucket}


# -- 1: per-object latency of the hit and miss paths -------------------------------------------


def bench_path(report: Report, resources: Resources, base_env: Mapping[str, str],
               src: str, keys: list[str], rounds: int, hit_repeats: int) -> None:
    manifest = common.ROOT / "manifest.yaml"
    payload: dict[str, Any] = {"bucket": src, "sizes": [common.SIZE]}

    def invoke(executor: Engine, key: str, expect: str) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        activation = executor.invoke(SEQUENCE, {**payload, "key": key})
        ms = elapsed_ms(started)
        result: dict[str, Any] = activation.result
        if result.get("status") != expect:
            raise RuntimeError(f"{key}: expected {expect}, got {result}")
        if result.get("digest_source") != "checksum":
            raise RuntimeError(f"{key}: digest not from the store's checksum: {result}")
        return ms, result

    # Warm-up: imports (Pillow, the CouchDB client), connections, the manifest.
    dest = resources.bucket("warm")
    name, url = resources.database("warm")
    executor = local_executor(manifest, run_env(base_env, url, dest))
    for key in keys[:common.WARMUP_PHOTOS]:
        invoke(executor, key, COMPUTED)
        invoke(executor, key, DEDUPLICATED)
    resources.drop_database(name)
    resources.drop_bucket(dest)

    for _ in range(rounds):
        dest = resources.bucket("out")
        name, url = resources.database("path")
        env = run_env(base_env, url, dest)
        executor = local_executor(manifest, env)
        context = Context(Settings.resolve({}, env))  # the parts, timed directly
        for key in keys:
            ms, result = invoke(executor, key, COMPUTED)
            report.add("miss", ms)
            output = result["outputs"][0]
            pair = [(output["function_id"], result["digest"])]
            context.records.get_many(pair)  # this context's first use: connect untimed
            context.store.head(src, key)
            for _ in range(hit_repeats):
                ms, _ = invoke(executor, key, DEDUPLICATED)
                report.add("hit", ms)
                started = time.perf_counter()
                info = context.store.head(src, key)
                report.add("hit_head_checksum", elapsed_ms(started))
                if info.sha256 != result["digest"]:
                    raise RuntimeError(f"{key}: head() gave no (or another) checksum")
                started = time.perf_counter()
                found = context.records.get_many(pair)
                report.add("hit_records_get_many_1", elapsed_ms(started))
                if len(found) != 1:
                    raise RuntimeError(f"{key}: record not found directly")
                started = time.perf_counter()
                exists = context.store.exists(output["bucket"], output["key"])
                report.add("hit_output_exists", elapsed_ms(started))
                if not exists:
                    raise RuntimeError(f"{key}: output {output['key']} missing")
        context.close()
        resources.drop_database(name)
        resources.drop_bucket(dest)

    parts = {  # series -> check id, what the hit path does there
        "hit_head_checksum": ("1c", "store.head() of the input, with checksum"),
        "hit_records_get_many_1": ("1d", "records.get_many() of 1 id (one GET)"),
        "hit_output_exists": ("1e", "store.exists() of the recorded output (HEAD)"),
    }
    rest = report.med("hit") - sum(report.med(p) for p in parts)
    report.extra["hit_rest_ms"] = rest
    miss_med, hit_med = report.med("miss"), report.med("hit")
    report.checks += [
        common.Check("1a", "HIT path per object (sequence, in-process)",
                     f"{med_p95(report.samples['hit'])} (med/p95)"),
        common.Check("1b", "MISS path per object (sequence, in-process); ratio hit/miss",
                     f"{med_p95(report.samples['miss'])} (med/p95)", hit_med / miss_med),
        *(common.Check(tag, f"  hit part: {what}", med_p95(report.samples[series]),
                       report.med(series) / hit_med)
          for series, (tag, what) in parts.items()),
        common.Check("1f", "  hit rest: engine + 4 actions (hit median - parts)",
                     f"{rest:.2f} ms", rest / hit_med),
    ]


# -- 2: map throughput -------------------------------------------------------------------------


def map_once(env: Mapping[str, str], src: str, dest: str, keys: list[str], workers: int,
             label: str) -> common.MapRun:
    """``common.thumbnail_map`` with the manifest; checks that *label* (cold or warm) held."""
    run = common.thumbnail_map(env, src, dest, keys, workers, label, common.ROOT / "manifest.yaml")
    expected = run.computed if label == "cold" else run.deduplicated
    if expected != len(keys):
        raise RuntimeError(f"map {label} {workers}w: {run.computed} computed, "
                           f"{run.deduplicated} deduplicated of {len(keys)}")
    return run


def bench_map(report: Report, resources: Resources, base_env: Mapping[str, str], src: str,
              keys: list[str], repeats: int) -> None:
    dest = resources.bucket("warm")
    name, url = resources.database("warm")
    map_once(run_env(base_env, url, dest), src, dest, keys[:common.WARMUP_PHOTOS], 2, "cold")
    resources.drop_database(name)
    resources.drop_bucket(dest)
    ceilings: dict[str, list[float]] = report.extra.setdefault("cpu_scaling", {})
    for _ in range(repeats):
        for workers in MAP_WORKERS[1:]:
            ceilings.setdefault(f"{workers}_vs_1", []).append(
                common.cpu_scaling(workers, CPU_SCALING_LOOPS))
        for workers in MAP_WORKERS:
            dest = resources.bucket("out")
            name, url = resources.database("map")
            env = run_env(base_env, url, dest)
            report.maps.append(map_once(env, src, dest, keys, workers, "cold"))
            report.maps.append(map_once(env, src, dest, keys, workers, "warm"))
            resources.drop_database(name)
            resources.drop_bucket(dest)

    n = len(keys)
    best = {(label, w): min(r.wall_s for r in report.map_runs(label, w))
            for label in ("cold", "warm") for w in MAP_WORKERS}
    for label, tag in (("cold", "2a"), ("warm", "2b")):
        for w in MAP_WORKERS:
            per_object = common.pooled_ms(report.map_runs(label, w))
            ceiling = ""
            if w > 1:
                ceiling = f"; CPU ceiling {statistics.median(ceilings[f'{w}_vs_1']):.2f}x"
            what = "all misses" if label == "cold" else "all hits"
            report.checks.append(common.Check(
                f"{tag}{w}", f"map {label} ({what}), {w} worker(s); ratio vs 1 worker",
                f"{best[label, w]:.2f} s, {n / best[label, w]:.1f} photos/s, per object "
                f"{med_p95(per_object)}{ceiling}",
                best[label, 1] / best[label, w],
            ))


# -- 3: record-store lookups at 1k and 100k records --------------------------------------------


@dataclass
class LookupDb:
    label: str
    store: RecordStore
    made: common.SyntheticRecords
    load_s: float


def load_db(resources: Resources, label: str, count: int, seed: int) -> LookupDb:
    _, url = resources.database("rec")
    store = open_records(url)
    if not isinstance(store, CouchRecordStore):
        raise RuntimeError(f"{url} is not a CouchDB record store")
    made, load_s = common.load_records(store, count, seed)
    return LookupDb(label, store, made, load_s)


def bench_records(report: Report, resources: Resources, small: int, large: int,
                  lookups: int, console: Console) -> None:
    dbs: list[LookupDb] = []
    for label, count, seed in (("small", small, 1), ("large", large, 2)):
        console.print(f"  loading {count} records ...", highlight=False)
        dbs.append(load_db(resources, label, count, seed))
    report.extra["records_load_s"] = {db.label: db.load_s for db in dbs}
    report.extra["records_counts"] = {db.label: db.made.count for db in dbs}
    rng = random.Random(3)
    for i in range(lookups + 50):  # 50 warm-up rounds first
        for db in dbs if i % 2 == 0 else reversed(dbs):
            one_ms, many_ms = common.time_lookups(db.store, db.made, rng)
            if i >= 50:
                report.add(f"get_{db.label}", one_ms)
                report.add(f"get_many6_{db.label}", many_ms)
    for db in dbs:
        db.store.close()

    names = {"small": f"{small // 1000}k" if small >= 1000 else str(small),
             "large": f"{large // 1000}k" if large >= 1000 else str(large)}
    for op, tag, what in (("get", "3a", "get of an existing id"),
                          ("get_many6", "3b", "get_many of 6 ids")):
        s, big = f"{op}_small", f"{op}_large"
        report.checks.append(common.Check(
            tag, f"records {what}: {names['large']} vs {names['small']} records (median)",
            f"{names['small']} {med_p95(report.samples[s])}, "
            f"{names['large']} {med_p95(report.samples[big])}",
            report.med(big) / report.med(s), "<=", FLAT_TARGET,
        ))
    report.extra["records_p95_ratio"] = {
        op: report.p95(f"{op}_large") / report.p95(f"{op}_small") for op in ("get", "get_many6")}


# -- output ------------------------------------------------------------------------------------


def print_table(report: Report, console: Console) -> None:
    common.print_checks(console, "owdedup services benchmark (MinIO + CouchDB API)",
                        report.checks)
    env = report.environment
    cpus = int(env["cpu_count"] or 1)
    console.print(
        f"{cpus} CPUs ({env['cpu_model']}), Python {env['python']}, store {env['store']}, "
        f"records {env['couchdb_server']}; load average (1 min) at start "
        f"{load_note(env['load_average_start'][0], cpus)}, at end "
        f"{load_note(env['load_average_end'][0], cpus)} (the end includes this benchmark "
        "and the services it drives)", highlight=False,
    )
    if "records_load_s" in report.extra:
        loads = report.extra["records_load_s"]
        counts = report.extra["records_counts"]
        console.print("put_many: " + ", ".join(
            f"{counts[k]} records in {v:.1f} s" for k, v in loads.items()), highlight=False)
    if env["load_average_start"][0] > 0.5 * cpus:
        console.print(
            "[yellow]The machine was busy when the run started: another process shares the "
            "CPUs, so absolute times (and the parallel speed-ups) are pessimistic.[/]")


def save_chart(report: Report, path: Path) -> None:
    plt = common.pyplot()  # not imported at the top: see common.pyplot
    panels = []
    if "hit" in report.samples:
        panels.append("path")
    if report.maps:
        panels.append("map")
    if "get_small" in report.samples:
        panels.append("records")
    if not panels:
        return
    fig, axes_any = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.5))
    axes = list(axes_any) if len(panels) > 1 else [axes_any]
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "path":
            names = {"miss": "miss (sequence)", "hit": "hit (sequence)",
                     "hit_head_checksum": "head + checksum",
                     "hit_records_get_many_1": "record get (1 id)",
                     "hit_output_exists": "output exists"}
            labels = list(names.values())
            meds = [report.med(k) for k in names]
            p95s = [report.p95(k) for k in names]
            bars = ax.barh(labels, meds, color="steelblue", label="median")
            ax.scatter(p95s, labels, color="black", marker="|", s=120, label="p95", zorder=3)
            ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.set_xlim(right=max(p95s) * 4)
            ax.set_xlabel("ms per object (log scale)")
            ax.set_title("1. per-object latency")
            ax.legend(fontsize=8, loc="lower right")
        elif panel == "map":
            width = 0.38
            xs = range(len(MAP_WORKERS))
            for offset, label, color in ((-width / 2, "cold", "firebrick"),
                                         (width / 2, "warm", "seagreen")):
                values = [report.maps[0].objects / min(r.wall_s for r in
                                                       report.map_runs(label, w))
                          for w in MAP_WORKERS]
                bars = ax.bar([x + offset for x in xs], values, width, color=color,
                              label=label)
                ax.bar_label(bars, fmt="%.1f", fontsize=8)
            ax.set_xticks(list(xs), [f"{w} worker(s)" for w in MAP_WORKERS])
            ax.set_ylabel("photos/s (best wall time)")
            ax.set_title("2. map throughput")
            ax.legend(fontsize=8)
        else:
            counts = report.extra["records_counts"]
            width = 0.38
            ops = ("get", "get_many6")
            for offset, size, color in ((-width / 2, "small", "steelblue"),
                                        (width / 2, "large", "darkorange")):
                meds = [report.med(f"{op}_{size}") for op in ops]
                p95s = [report.p95(f"{op}_{size}") for op in ops]
                xs2 = [i + offset for i in range(len(ops))]
                bars = ax.bar(xs2, meds, width, color=color, label=f"{counts[size]} records")
                ax.scatter(xs2, p95s, color="black", marker="_", s=150, zorder=3)
                ax.bar_label(bars, fmt="%.2f", fontsize=8)
            ax.set_xticks(range(len(ops)), ["get (1 id)", "get_many (6 ids)"])
            ax.set_ylabel("ms (bar: median, dash: p95)")
            ax.set_title("3. record lookups vs database size")
            ax.legend(fontsize=8)
    common.save_figure(fig, f"owdedup services benchmark ({report.environment['cpu_count']} "
                       f"CPUs, {report.environment['couchdb_server']})", path)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = common.argument_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (1), each on a fresh database: misses per photo")
    parser.add_argument("--hit-repeats", type=int, default=5,
                        help="hit invocations per photo and round in (1)")
    parser.add_argument("--map-repeats", type=int, default=3, help="rounds of map runs (2)")
    parser.add_argument("--small", type=int, default=1_000, help="records in the small db (3)")
    parser.add_argument("--large", type=int, default=100_000,
                        help="records in the large db (3)")
    parser.add_argument("--lookups", type=int, default=500,
                        help="lookups of each kind per database (3)")
    common.add_only(parser, SECTIONS)
    return parser.parse_args(argv)


@contextmanager
def services(console: Console) -> Iterator[tuple[Resources, dict[str, str]]]:
    """Resources on the configured services; the credentials go into os.environ (config.py
    reads OWDEDUP_STORE_* options from the process environment, in workers too)."""
    found = service_environment()
    os.environ.update({k: v for k, v in found.items()
                       if k.startswith((STORE_OPTION_PREFIX, RECORDS_OPTION_PREFIX))})
    store_url = found.get(ENV_STORE, "")
    records_url = found.get(ENV_RECORDS, "")
    if not store_url.startswith(("http://", "https://", "s3://")):
        sys.exit(f"OWDEDUP_STORE must be an S3 endpoint, not {store_url!r}")
    if not records_url.startswith(("http://", "https://", "couchdb://")):
        sys.exit(f"OWDEDUP_RECORDS must be a CouchDB URL, not {records_url!r}")
    service, _ = parse_url(records_url)
    store = open_store(store_url, store_options())
    resources = Resources(store, store_url, service)
    base_env = {**os.environ, **found}
    try:
        yield resources, base_env
    finally:
        failed = resources.close()
        store.close()
        created = resources.history
        console.print(f"cleaned up {len(created['buckets'])} bucket(s) and "
                      f"{len(created['databases'])} database(s)", highlight=False)
        for line in failed:
            console.print(f"[yellow]cleanup: {line}[/]", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sections = common.parse_sections(args.only, SECTIONS)
    photos = common.jpeg_photos(args.photos)
    if len(photos) < common.WARMUP_PHOTOS:
        sys.exit(f"need at least {common.WARMUP_PHOTOS} JPEG photos in {args.photos}")
    console = Console(width=None if sys.stdout.isatty() else 160)
    start_load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    console.print(f"load average at start: {load_note(start_load, cpus)}", highlight=False)

    with services(console) as (resources, base_env):
        report = Report(environment(photos, base_env[ENV_STORE], base_env[ENV_RECORDS]))
        keys: list[str] = []
        src = ""
        if sections & {"path", "map"}:
            src = resources.bucket("src")
            for photo in photos:
                info = resources.store.put(src, photo.name, photo.read_bytes(),
                                           content_type="image/jpeg")
                if info.sha256 is None:
                    sys.exit(f"{photo.name}: the store kept no SHA-256 checksum")
                keys.append(photo.name)
        if "path" in sections:
            console.print("[bold]1[/]: hit and miss paths, in process ...")
            bench_path(report, resources, base_env, src, keys, args.rounds, args.hit_repeats)
        if "map" in sections:
            console.print("[bold]2[/]: map, 1/2/4 workers, cold and warm ...")
            bench_map(report, resources, base_env, src, keys, args.map_repeats)
        if "records" in sections:
            console.print("[bold]3[/]: record lookups, small and large database ...")
            bench_records(report, resources, args.small, args.large, args.lookups, console)
        report.extra["created"] = resources.history
    report.environment["load_average_end"] = list(os.getloadavg())

    return common.write_outputs(report, args.out, console,
                                lambda path: save_chart(report, path),
                                lambda: print_table(report, console))


if __name__ == "__main__":
    sys.exit(main())
