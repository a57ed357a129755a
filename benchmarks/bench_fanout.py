"""What the fan-out client costs, and how throughput grows with the window, through serve.

For each window size (``--windows``, default 1,2,4,8,16) the client invokes a trivial action
(``--work-ms`` of sleep, so the platform's CPU is not the bottleneck) ``--tasks`` times
through ``owdedup serve`` with its limits raised, and measures the wall time, invocations per
second, and the client's own CPU time per invocation (``time.process_time`` of this process
minus serve's threads is not separable, so serve runs in a child process). A second series
runs a CPU-bound action (``--cpu-ms`` of pure-Python work) to show where this machine's
cores flatten the curve.

The client's CPU per invocation bounds the fan-out on a real cluster: a client that spends
*c* ms of CPU per invocation issues at most 1000/c invocations per second per core.

    python benchmarks/bench_fanout.py --out bench-results/fanout
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from owdedup.openwhisk.client import Credentials, OpenWhiskClient  # noqa: E402
from owdedup.openwhisk.fanout import SUCCEEDED, FanOut, FanOutPolicy, Task  # noqa: E402

AUTH = "7c5c5b8e-2f0c-4a3d-9c53-5b7e1e2a9d11:" + "b" * 64
SLEEP = "import time\ndef main(p):\n    time.sleep(p['ms'] / 1000)\n    return {'n': p['n']}\n"
SPIN = ("def main(p):\n    x = 0\n    for i in range(p['loops']):\n        x += i * i\n"
        "    return {'n': p['n'], 'x': x % 7}\n")


@dataclass
class Point:
    series: str
    window: int
    tasks: int
    wall_s: float
    per_s: float
    client_cpu_ms: float  # per invocation
    throttled: int
    cold_starts: int
    p50_ms: float
    p95_ms: float


def start_serve(port: int, containers: int, log: Path,
                state: Path | None = None) -> subprocess.Popen[bytes]:
    """``owdedup serve`` on *port* with its limits raised out of the way and *containers*
    action processes at once (the key through the environment); *state* keeps what is
    deployed across restarts (a restart is how a benchmark gets cold containers). As many
    idle processes are kept per action as may run at once, as an invoker keeps its idle
    containers: a burst of N leaves N warm, not serve's default 2."""
    env = {**os.environ, "OWDEDUP_SERVE_AUTH": AUTH}
    process = subprocess.Popen(
        [sys.executable, "-m", "owdedup", "serve", "--port", str(port), "--containers",
         str(containers), "--warm", str(containers), "--limits",
         "invocationsPerMinute=1000000,concurrentInvocations=100000,firesPerMinute=100000",
         *(("--state", str(state)) if state is not None else ())],
        env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"serve did not start: {log.read_text()}")


def stop_serve(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def put_action(url: str, name: str, code: str) -> None:
    body = json.dumps({"exec": {"kind": "python:3.11", "code": code}}).encode()
    request = urllib.request.Request(
        f"{url}/api/v1/namespaces/_/actions/{name}?overwrite=true", data=body, method="PUT",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()})
    with urllib.request.urlopen(request, timeout=30):
        pass


def measure(client: OpenWhiskClient, series: str, action: str, window: int, tasks: int,
            params: dict[str, Any]) -> Point:
    fanout = FanOut(client, FanOutPolicy(window=window, straggler_factor=0))
    work = [Task(f"{series}-{window}-{n}", action, {**params, "n": n}) for n in range(tasks)]
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes, stats = fanout.run(work)
    wall_s = time.perf_counter() - wall
    cpu_s = time.process_time() - cpu
    failed = [o for o in outcomes if o.status != SUCCEEDED]
    if failed:
        raise SystemExit(f"{series} window {window}: {len(failed)} failed: {failed[0].error}")
    durations = sorted(o.platform_ms for o in outcomes)
    return Point(series, window, tasks, wall_s, tasks / wall_s, cpu_s * 1000 / tasks,
                 stats.throttled, stats.cold_starts, statistics.median(durations),
                 durations[min(len(durations) - 1, int(0.95 * len(durations)))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--windows", default="1,2,4,8,16")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--work-ms", type=float, default=50.0)
    parser.add_argument("--cpu-loops", type=int, default=2_000_000)
    parser.add_argument("--port", type=int, default=3299)
    args = parser.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console()
    serve = start_serve(args.port, max(windows), args.out / "serve.log")
    points: list[Point] = []
    try:
        url = f"http://127.0.0.1:{args.port}"
        put_action(url, "sleepy", SLEEP)
        put_action(url, "spin", SPIN)
        client = OpenWhiskClient(Credentials(url, AUTH))
        for window in windows:  # warm the containers first: the series compare warm runs
            measure(client, "warm-up", "sleepy", window, window, {"ms": 1})
            measure(client, "warm-up", "spin", window, window, {"loops": 1})
        for window in windows:
            points.append(measure(client, "io", "sleepy", window, args.tasks,
                                  {"ms": args.work_ms}))
            points.append(measure(client, "cpu", "spin", window, max(16, args.tasks // 4),
                                  {"loops": args.cpu_loops}))
        client.close()
    finally:
        stop_serve(serve)
    table = Table(title=f"fan-out through serve ({os.cpu_count()} cores)")
    for column in ("series", "window", "tasks", "wall s", "inv/s", "speed-up",
                   "client CPU ms/inv", "p50 ms", "p95 ms", "429s"):
        table.add_column(column, justify="right")
    base = {p.series: p.per_s for p in points if p.window == windows[0]}
    for p in points:
        table.add_row(p.series, str(p.window), str(p.tasks), f"{p.wall_s:.2f}", f"{p.per_s:.1f}",
                      f"{p.per_s / base[p.series]:.2f}x", f"{p.client_cpu_ms:.2f}",
                      f"{p.p50_ms:.0f}", f"{p.p95_ms:.0f}", str(p.throttled))
    console.print(table)
    (args.out / "results.json").write_text(json.dumps([asdict(p) for p in points], indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for series in ("io", "cpu"):
        chosen = [p for p in points if p.series == series]
        ax.plot([p.window for p in chosen], [p.per_s / base[series] for p in chosen],
                marker="o", label=f"{series}-bound action")
    ax.plot(windows, windows, linestyle=":", color="grey", label="linear")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("invocations in flight (window)")
    ax.set_ylabel("speed-up over window 1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "chart.png", dpi=120)
    console.print(f"raw numbers: {args.out / 'results.json'}, chart: {args.out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
