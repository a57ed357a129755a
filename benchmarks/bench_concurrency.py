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

They are not deduplicated: wrapping any action in owdedup's dedup is the generic wrapper's
job (issue 10, built separately); once it exists, the CPU series with repeating inputs
shows what deduplication saves. Until then this measures the platform side only.

For each function and each level c of ``--levels`` (default 1,2,4,8):

- cold: the action is updated (a new version: serve retires its warm processes, as
  OpenWhisk does on an update), then c invocations at once; their latency, each a cold
  start;
- warm: ``--calls`` invocations (at least 2c) with c in flight at a time: throughput
  (invocations/s, and its speed-up over c=1) and latency p50/p95, measured at the client
  (blocking invoke, from the POST to the activation's arrival); cold starts in this phase
  are counted (0 expected: serve keeps c warm processes per action, ``--warm``).

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
from owdedup.runtime.config import ENV_STORE

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_concurrency, and mypy
    from benchmarks import bench_fanout, bench_peers, common
else:  # python benchmarks/bench_concurrency.py: benchmarks/ is sys.path[0]
    import bench_fanout
    import bench_peers
    import common

ACTIONS = Path(__file__).resolve().parent / "concurrency_actions"
FUNCTIONS = {"cpu": "cpu_heavy", "net": "net_heavy", "io": "io_heavy"}


@dataclass
class Level:
    function: str
    concurrency: int
    calls: int
    wall_s: float
    per_s: float
    latency_ms: list[float]  # warm phase, client-side, one per call
    cold_latency_ms: list[float]  # cold phase, one per call
    cold_in_warm: int  # cold starts during the warm phase
    cold_in_cold: int  # cold starts during the cold phase

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latency_ms)

    @property
    def p95_ms(self) -> float:
        return common.percentile(self.latency_ms, 95)


@dataclass
class Report(common.BaseReport):
    timings_key = "levels"

    levels: list[Level] = field(default_factory=list)

    def timings_json(self) -> dict[str, Any]:
        return {"levels": [asdict(level) for level in self.levels]}


# -- invoking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    latency_ms: float
    cold: bool


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
    return Call(latency_ms, cold)


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
    env = report.environment
    console.print(f"load average (1 min) {env['load_average_start'][0]:.2f} -> "
                  f"{env['load_average_end'][0]:.2f}; settings {env['settings']}",
                  highlight=False)


def save_chart(report: Report, path: Path) -> None:
    plt = common.pyplot()
    fig, (speed, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
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
    common.save_figure(fig, f"concurrent invocations through serve ({os.cpu_count()} cores)",
                       path)


# -- main -----------------------------------------------------------------------------------------


def levels_arg(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"need levels like 1,2,4,8, not {text!r}") from None
    if not values or min(values) < 1 or values != sorted(values):
        raise argparse.ArgumentTypeError(f"need positive ascending levels, not {text!r}")
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    functions = [f.strip() for f in args.functions.split(",") if f.strip()]
    if unknown := set(functions) - set(FUNCTIONS):
        sys.exit(f"unknown function(s): {', '.join(sorted(unknown))}")
    console = Console(width=None if sys.stdout.isatty() else 180)
    settings = {"levels": args.levels, "calls": args.calls, "cpu_n": args.cpu_n,
                "cpu_depth": args.cpu_depth, "net_mib": args.net_mib, "io_mib": args.io_mib}
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
    finally:
        client.close()
        bench_fanout.stop_serve(serve)


if __name__ == "__main__":
    sys.exit(main())
