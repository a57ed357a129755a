"""The local and action benchmarks run end to end on tiny inputs (see bench_run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.benchmarks.bench_run import assert_complete, make_photos, run_benchmark
from tests.tooling import listen_ports, need_base_python


def test_local_benchmark_measures_every_target(tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos")
    run = run_benchmark("bench_local.py", ["--photos", str(photos), "--repeats", "1",
                                           "--map-repeats", "1"], tmp_path / "out")
    assert_complete(run, ["a", "b", "c1", "c2", "d", "e", "f"])
    maps = {m["label"]: m for m in run.results["maps"]}
    assert maps, "the map runs are recorded"
    assert all(m["objects"] > 0 for m in maps.values())


def test_action_benchmark_measures_every_action(tmp_path: Path) -> None:
    need_base_python()  # the actions run on the base interpreter, as in the runtime
    photos = make_photos(tmp_path / "photos", count=1)
    run = run_benchmark(
        "bench_actions.py",
        ["--photos", str(photos),  # the runtime's packages: the cached prepare
         "--runs", "1", "--fresh-runs", "1", "--mem-runs", "1", "--big-mib", "8",
         "--invokes", "2", "--warmup", "1"],
        tmp_path / "out",
    )
    actions = ("hash", "lookup", "record", "thumbnail")
    warm = [f"w.{name}/{path}" for name in (*actions[:2], "thumbnail", "record", "sequence")
            for path in ("hit", "miss")]
    assert_complete(run, [
        *(f"c.{name}" for name in actions), *(f"cf.{name}" for name in actions),
        "m.jpeg", "m.png_rgba", "m.png_grey16", "m.hash", "m.hash-growth",
        *warm, "w.noop/new-conn", "w.noop/keep-alive", "s.zip", "s.base64",
    ])


def test_cold_benchmark_measures_every_target(tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos", count=2)
    run = run_benchmark("bench_cold.py", ["--photos", str(photos), "--rounds", "2"],
                        tmp_path / "out")
    assert_complete(run, ["t1", "t2", "m1", "m2"])
    assert {name: len(times) for name, times in run.results["rounds_s"].items()} == {
        "pillow-1": 2, "map-1w": 2, "pool-2": 2, "map-2w": 2}


def test_fanout_benchmark_measures_every_window(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[2] / "benchmarks" /
                             "bench_fanout.py"), "--out", str(out), "--tasks", "6",
         "--windows", "1,2", "--cpu-loops", "1000", "--port", str(listen_ports(1)[0])],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    points = json.loads((out / "results.json").read_text())
    assert {(p["series"], p["window"]) for p in points} == {
        ("io", 1), ("io", 2), ("cpu", 1), ("cpu", 2)}
    assert all(p["client_cpu_ms"] > 0 and p["per_s"] > 0 for p in points)
    assert (out / "chart.png").stat().st_size > 0
