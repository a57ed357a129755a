"""The concurrency experiment: CPU-, network- and file-I/O-heavy invocations, 1..N at a time,
through ``owdedup serve`` (issue 12, benchmark 3).

Run from the repository root (the network function downloads from the MinIO of
``OWDEDUP_STORE`` and its keys when set, else from one that ``owdedup.services`` starts on
free ports in a temporary folder, stopped afterwards)::

    .venv/bin/python benchmarks/bench_concurrency.py --out bench-results/concurrency

The three functions are bare Python actions (``benchmarks/concurrency_actions/``), each
file's docstring giving its input and output:

- ``cpu``: a pure-Python matrix multiplication and a binary tree (``--cpu-n``,
  ``--cpu-depth``);
- ``net``: downloads one ``--net-mib`` MiB object of random bytes from MinIO through a
  presigned URL (the action holds no credential) and hashes it;
- ``io``: writes ``--io-mib`` MiB into temporary files, fsyncs them, reads them back.

They run bare (the platform side only), and the CPU function also wrapped, as ``owdedup wrap
cpu --objects -`` wraps it (its plan run by its executor: the conductor ``cpu-dedup`` keyed by
the call's parameters, records in SQLite), to show what deduplication does when inputs repeat
(``--repeats``, default 0,50,90 %).

For each function and each level c of ``--levels`` (default 1,2,4,8):

- cold: the action is updated (a new version: serve retires its warm processes, as
  OpenWhisk does on an update), then c invocations at once; their latency, each a cold
  start;
- warm: ``--calls`` invocations (at least 2c) with c in flight at a time: throughput
  (invocations/s, and its speed-up over c=1) and latency p50/p95, measured at the client
  (blocking invoke, from the POST to the activation's arrival); cold starts in this phase
  are counted (0 expected: serve keeps c warm processes per action, ``--warm``).

The deduplicated series, for each repeat fraction r and each level c: ``c`` calls on fresh
seeds first (not counted: they warm the conductor and the action), then ``--calls`` calls of
``cpu-dedup``, c in flight at a time, on ``round(calls * (1 - r))`` distinct seeds taken in
turn (seed i mod distinct, each level its own seeds: no record of an earlier level is hit;
same n and depth as the bare series). Reported: throughput, latency p50/p95, the wrapped
action's runs (misses: a repeat still in flight when its twin arrives runs too) and the
activations of ``cpu`` saved against the bare action, which runs every call.

Serve runs with ``--containers`` and ``--warm`` at the largest level and its invocation
limits raised out of the way. This machine's cores flatten the CPU curve at their count;
the network and I/O curves flatten where MinIO and the disk do.

Outputs in ``--out``: ``results.json`` and ``chart.png``; the table is printed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from owdedup.openwhisk.client import Credentials, OpenWhiskClient
from owdedup.openwhisk.wrap import Executor, plan_wrap
from owdedup.runtime.config import ENV_RECORDS, ENV_STORE

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_concurrency, and mypy
    from benchmarks import bench_fanout, bench_peers, common
else:  # python benchmarks/bench_concurrency.py: benchmarks/ is sys.path[0]
    import bench_fanout
    import bench_peers
    import common

ACTIONS = Path(__file__).resolve().parent / "concurrency_actions"
PROJECT = Path(__file__).resolve().parents[1]
FUNCTIONS = {"cpu": "cpu_heavy", "net": "net_heavy", "io": "io_heavy"}


class _Latencies:
    """Median and p95 of a level's client-side latencies (one per call)."""

    latency_ms: list[float]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latency_ms)

    @property
    def p95_ms(self) -> float:
        return common.percentile(self.latency_ms, 95)


@dataclass
class Level(_Latencies):
    function: str
    concurrency: int
    calls: int
    wall_s: float
    per_s: float
    latency_ms: list[float]  # warm phase, client-side, one per call
    cold_latency_ms: list[float]  # cold phase, one per call
    cold_in_warm: int  # cold starts during the warm phase
    cold_in_cold: int  # cold starts during the cold phase


@dataclass
class DedupLevel(_Latencies):
    """The wrapped CPU function at one level with a fraction of repeated inputs."""

    repeat_pct: int
    concurrency: int
    calls: int
    distinct: int  # distinct seeds among the calls
    wall_s: float
    per_s: float
    latency_ms: list[float]
    runs: int  # calls the conductor missed: the wrapped action ran
    hits: int  # calls answered from a record: the wrapped action never started
    not_recorded: int  # ran, but the record store did not keep the result


@dataclass
class Report(common.BaseReport):
    timings_key = "levels"

    levels: list[Level] = field(default_factory=list)
    dedup: list[DedupLevel] = field(default_factory=list)

    def timings_json(self) -> dict[str, Any]:
        return {"levels": [asdict(level) for level in self.levels],
                "dedup": [asdict(level) for level in self.dedup]}


# -- invoking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    latency_ms: float
    cold: bool
    #: A wrapped call's ``owdedup`` metadata (None for a bare action).
    dedup: Mapping[str, Any] | None = None


def call(client: OpenWhiskClient, action: str, params: Mapping[str, Any]) -> Call:
    """One blocking invocation, timed at the client; raises unless it succeeded."""
    started = time.perf_counter()
    reply = client.invoke(action, params, blocking=True)
    latency_ms = (time.perf_counter() - started) * 1000
    body = reply.body if isinstance(reply.body, dict) else {}
    response = body.get("response") or {}
    result = response.get("result") or {}
    if reply.status != 200 or not response.get("success") or "error" in result:
        raise RuntimeError(f"{action}: HTTP {reply.status}: {result or reply.body}")
    cold = any(a.get("key") == "initTime" for a in body.get("annotations", ()))
    meta = result.get("owdedup")
    return Call(latency_ms, cold, meta if isinstance(meta, dict) else None)


def at_once(client: OpenWhiskClient, action: str, params: Mapping[str, Any], calls: int,
            concurrency: int) -> tuple[list[Call], float]:
    """*calls* invocations, *concurrency* in flight at a time; the calls and the wall time."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        started = time.perf_counter()
        done = list(pool.map(lambda _n: call(client, action, params), range(calls)))
        return done, time.perf_counter() - started


def put_function(url: str, function: str) -> None:
    """Create the action, or update it: a new version, whose first calls start cold."""
    bench_fanout.put_action(url, function, (ACTIONS / f"{FUNCTIONS[function]}.py").read_text())


def measure(client: OpenWhiskClient, url: str, function: str, params: Mapping[str, Any],
            concurrency: int, calls: int) -> Level:
    put_function(url, function)
    cold, _ = at_once(client, function, params, concurrency, concurrency)
    warm, wall_s = at_once(client, function, params, calls, concurrency)
    return Level(function, concurrency, calls, wall_s, calls / wall_s,
                 [c.latency_ms for c in warm], [c.latency_ms for c in cold],
                 sum(c.cold for c in warm), sum(c.cold for c in cold))


def wrap_cpu(client: OpenWhiskClient, url: str, work: Path) -> str:
    """``owdedup wrap cpu --objects -``: its plan, run by its executor; the conductor's name.
    Keyed by the parameters alone (n, depth, seed); records in a SQLite file of *work*."""
    (work / "store").mkdir(exist_ok=True)
    environ = {"OW_APIHOST": url, "OW_AUTH": bench_fanout.AUTH, "OW_NAMESPACE": "_",
               ENV_STORE: f"file://{work / 'store'}",
               ENV_RECORDS: f"sqlite://{work / 'records.sqlite'}"}
    Executor(client).run(plan_wrap("cpu", objects="-", ignore="", version="", name="",
                                   no_metadata=False, project=PROJECT, environ=environ))
    return "cpu-dedup"


def measure_dedup(client: OpenWhiskClient, conductor: str, params: Mapping[str, Any],
                  repeat_pct: int, concurrency: int, calls: int) -> DedupLevel:
    """*calls* calls of the wrapped CPU function, *repeat_pct* % of them repeating an
    earlier call's seed, after *concurrency* uncounted calls that warm it."""
    base = secrets.randbelow(1 << 40)  # this level's own seeds: no earlier record is hit
    distinct = max(1, round(calls * (100 - repeat_pct) / 100))
    at_once_seeds(client, conductor, params, [base + calls + i for i in range(concurrency)],
                  concurrency)
    seeds = [base + i % distinct for i in range(calls)]
    done, wall_s = at_once_seeds(client, conductor, params, seeds, concurrency)
    hits = sum(bool(c.dedup and c.dedup.get("hit")) for c in done)
    not_recorded = sum(bool(c.dedup and c.dedup.get("record_error")) for c in done)
    return DedupLevel(repeat_pct, concurrency, calls, distinct, wall_s, calls / wall_s,
                      [c.latency_ms for c in done], calls - hits, hits, not_recorded)


def at_once_seeds(client: OpenWhiskClient, action: str, params: Mapping[str, Any],
                  seeds: list[int], concurrency: int) -> tuple[list[Call], float]:
    """One call per seed, in order, *concurrency* in flight at a time."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        started = time.perf_counter()
        done = list(pool.map(lambda seed: call(client, action, {**params, "seed": seed}),
                             seeds))
        return done, time.perf_counter() - started


# -- the network function's object ---------------------------------------------------------------


@contextmanager
def store_environment(console: Console) -> Iterator[dict[str, str]]:
    """``OWDEDUP_STORE`` and its keys from the environment, else those of a MinIO of our own
    on free ports in a temporary folder (as ``bench_peers.couch_server`` does for CouchDB)."""
    if os.environ.get(ENV_STORE):
        yield dict(os.environ)
        return
    from owdedup.services import ServicesConfig, down, env_vars, up

    state = Path(tempfile.mkdtemp(prefix="owdedup-concurrency-minio-"))
    config = replace(ServicesConfig.from_env(), state=state,
                     minio_port=bench_peers._free_port(),
                     minio_console_port=bench_peers._free_port())
    console.print(f"  starting MinIO on {config.store_url} ...", highlight=False)
    try:
        up(config, only=["minio"])
        yield env_vars(config)
    finally:
        down(config, only=["minio"])
        shutil.rmtree(state, ignore_errors=True)


class LargeObject:
    """``mib`` MiB of random bytes in a bucket of their own in MinIO, and a presigned URL to
    them (an hour); removed on close."""

    def __init__(self, env: Mapping[str, str], mib: int) -> None:
        from minio import Minio  # the store's own client: presigning is not in ObjectStore

        store = urlsplit(env[ENV_STORE])
        self.client = Minio(store.netloc, access_key=env.get("OWDEDUP_STORE_ACCESS_KEY"),
                            secret_key=env.get("OWDEDUP_STORE_SECRET_KEY"),
                            secure=store.scheme == "https")
        self.bucket, self.key = f"bench-concurrency-{uuid.uuid4().hex[:8]}", "large.bin"
        self.client.make_bucket(self.bucket)
        with tempfile.TemporaryFile() as data:
            for _ in range(mib):
                data.write(secrets.token_bytes(1 << 20))
            data.seek(0)
            self.client.put_object(self.bucket, self.key, data, mib << 20)
        self.url = self.client.presigned_get_object(self.bucket, self.key,
                                                    expires=timedelta(hours=1))

    def close(self) -> None:
        self.client.remove_object(self.bucket, self.key)
        self.client.remove_bucket(self.bucket)


# -- table and chart ------------------------------------------------------------------------------


def print_table(report: Report, console: Console) -> None:
    table = Table(title=f"concurrent invocations through serve ({os.cpu_count()} cores)")
    for column in ("function", "at once", "calls", "wall s", "inv/s", "speed-up", "p50 ms",
                   "p95 ms", "cold p50 ms", "cold starts (warm phase)"):
        table.add_column(column, justify="right")
    base = {lv.function: lv.per_s for lv in report.levels if lv.concurrency == 1}
    for lv in report.levels:
        speed_up = f"{lv.per_s / base[lv.function]:.2f}x" if lv.function in base else "-"
        table.add_row(lv.function, str(lv.concurrency), str(lv.calls), f"{lv.wall_s:.2f}",
                      f"{lv.per_s:.1f}", speed_up, f"{lv.p50_ms:.0f}", f"{lv.p95_ms:.0f}",
                      f"{statistics.median(lv.cold_latency_ms):.0f}", str(lv.cold_in_warm))
    console.print(table)
    if report.dedup:
        print_dedup_table(report, console)
    env = report.environment
    console.print(f"load average (1 min) {env['load_average_start'][0]:.2f} -> "
                  f"{env['load_average_end'][0]:.2f}; settings {env['settings']}",
                  highlight=False)


def print_dedup_table(report: Report, console: Console) -> None:
    table = Table(title="cpu wrapped (owdedup wrap --objects -), inputs repeating")
    for column in ("repeats", "at once", "calls", "distinct", "inv/s", "vs bare", "p50 ms",
                   "p95 ms", "cpu runs", "activations of cpu saved", "not recorded"):
        table.add_column(column, justify="right")
    bare = {lv.concurrency: lv for lv in report.levels if lv.function == "cpu"}
    for lv in report.dedup:
        versus = (f"{lv.per_s / bare[lv.concurrency].per_s:.2f}x"
                  if lv.concurrency in bare else "-")
        table.add_row(f"{lv.repeat_pct} %", str(lv.concurrency), str(lv.calls),
                      str(lv.distinct), f"{lv.per_s:.1f}", versus, f"{lv.p50_ms:.0f}",
                      f"{lv.p95_ms:.0f}", str(lv.runs), f"{lv.hits} of {lv.calls}",
                      str(lv.not_recorded))
    console.print(table)


def save_chart(report: Report, path: Path) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3 if report.dedup else 2, figsize=(16 if report.dedup else 11,
                                                                  4.2))
    speed, latency = axes[0], axes[1]
    levels = sorted({lv.concurrency for lv in report.levels})
    for function in FUNCTIONS:
        chosen = [lv for lv in report.levels if lv.function == function]
        if not chosen:
            continue
        base = chosen[0].per_s
        xs = [lv.concurrency for lv in chosen]
        speed.plot(xs, [lv.per_s / base for lv in chosen], marker="o", label=function)
        line = latency.plot(xs, [lv.p50_ms for lv in chosen], marker="o",
                            label=f"{function} warm p50")[0]
        latency.plot(xs, [statistics.median(lv.cold_latency_ms) for lv in chosen],
                     marker="x", linestyle="--", color=line.get_color(),
                     label=f"{function} cold p50")
    speed.plot(levels, [lv / levels[0] for lv in levels], linestyle=":", color="grey",
               label="linear")
    for ax in (speed, latency):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("invocations at once")
        ax.legend(fontsize=8)
    speed.set_ylabel("throughput / at-once-1's")
    latency.set_yscale("log")
    latency.set_ylabel("latency ms (client, log)")
    if report.dedup:
        plot_dedup(report, axes[2])
    common.save_figure(fig, f"concurrent invocations through serve ({os.cpu_count()} cores)",
                       path)


def plot_dedup(report: Report, ax: Any) -> None:
    """Throughput of the wrapped CPU function per repeat fraction, beside the bare one."""
    bare = [lv for lv in report.levels if lv.function == "cpu"]
    if bare:
        ax.plot([lv.concurrency for lv in bare], [lv.per_s for lv in bare], marker="o",
                color="black", label="cpu bare")
    for pct in sorted({lv.repeat_pct for lv in report.dedup}):
        chosen = [lv for lv in report.dedup if lv.repeat_pct == pct]
        ax.plot([lv.concurrency for lv in chosen], [lv.per_s for lv in chosen], marker="s",
                linestyle="--", label=f"cpu wrapped, {pct} % repeats")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("invocations at once")
    ax.set_ylabel("invocations/s")
    ax.legend(fontsize=8)


# -- main -----------------------------------------------------------------------------------------


def levels_arg(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"need levels like 1,2,4,8, not {text!r}") from None
    if not values or min(values) < 1 or values != sorted(values):
        raise argparse.ArgumentTypeError(f"need positive ascending levels, not {text!r}")
    return values


def repeats_arg(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"need percentages like 0,50,90, not {text!r}") from None
    if any(not 0 <= v < 100 for v in values):
        raise argparse.ArgumentTypeError(f"need percentages from 0 to 99, not {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for JSON and PNG")
    parser.add_argument("--levels", type=levels_arg, default=[1, 2, 4, 8])
    parser.add_argument("--calls", type=int, default=16,
                        help="warm invocations per level (at least twice the level)")
    parser.add_argument("--functions", default=",".join(FUNCTIONS))
    parser.add_argument("--cpu-n", type=int, default=80, help="matrix side")
    parser.add_argument("--cpu-depth", type=int, default=14, help="binary tree depth")
    parser.add_argument("--net-mib", type=int, default=32, help="object size")
    parser.add_argument("--io-mib", type=int, default=16, help="written and read per call")
    parser.add_argument("--port", type=int, default=0, help="serve's port (0: a free one)")
    parser.add_argument("--repeats", type=repeats_arg, default=[0, 50, 90],
                        help="the wrapped CPU series' %% of repeated inputs, e.g. 0,50,90 "
                             "(empty: no such series)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    functions = [f.strip() for f in args.functions.split(",") if f.strip()]
    if unknown := set(functions) - set(FUNCTIONS):
        sys.exit(f"unknown function(s): {', '.join(sorted(unknown))}")
    console = Console(width=None if sys.stdout.isatty() else 180)
    settings = {"levels": args.levels, "calls": args.calls, "cpu_n": args.cpu_n,
                "cpu_depth": args.cpu_depth, "net_mib": args.net_mib, "io_mib": args.io_mib,
                "repeats": args.repeats if "cpu" in functions else []}
    report = Report(common.environment([], None, {"settings": settings}))
    work = Path(tempfile.mkdtemp(prefix="owdedup-concurrency-"))
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, True)
        large = None
        if "net" in functions:
            large = LargeObject(cleanup.enter_context(store_environment(console)), args.net_mib)
            cleanup.callback(large.close)
        run_levels(report, args, functions, large, work, console)
    report.environment["load_average_end"] = list(os.getloadavg())
    return common.write_outputs(report, args.out, console,
                                lambda path: save_chart(report, path),
                                lambda: print_table(report, console))


def run_levels(report: Report, args: argparse.Namespace, functions: list[str],
               large: LargeObject | None, work: Path, console: Console) -> None:
    top = args.levels[-1]
    port = args.port or bench_peers._free_port()
    serve = bench_fanout.start_serve(port, top, work / "serve.log")
    url = f"http://127.0.0.1:{port}"
    client = OpenWhiskClient(Credentials(url, bench_fanout.AUTH))
    client.hold_connections(top)
    params = {"cpu": {"n": args.cpu_n, "depth": args.cpu_depth},
              "net": {"url": large.url if large else ""},
              "io": {"mib": args.io_mib}}
    try:
        for function in functions:
            console.print(f"  {function} ...", highlight=False)
            for concurrency in args.levels:
                calls = max(args.calls, 2 * concurrency)
                report.levels.append(measure(client, url, function, params[function],
                                             concurrency, calls))
        if "cpu" in functions and args.repeats:
            console.print("  cpu wrapped ...", highlight=False)
            conductor = wrap_cpu(client, url, work)
            for pct in args.repeats:
                for concurrency in args.levels:
                    calls = max(args.calls, 2 * concurrency)
                    report.dedup.append(measure_dedup(client, conductor, params["cpu"], pct,
                                                      concurrency, calls))
    finally:
        client.close()
        bench_fanout.stop_serve(serve)


if __name__ == "__main__":
    sys.exit(main())
