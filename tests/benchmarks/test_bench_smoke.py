"""The local and action benchmarks run end to end on tiny inputs (see bench_run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.bench_run import PNG_MAGIC, assert_complete, make_photos, run_benchmark
from tests.service_fixtures import Services
from tests.tooling import listen_ports, need_base_python, real_wskdeploy


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
    assert_complete(run, ["t1", "t2", "l1", "l2", "m1", "m2"])
    assert {name: len(times) for name, times in run.results["rounds_s"].items()} == {
        "pillow-1": 2, "map-1w": 2, "pool-2": 2, "map-2w": 2, "map-1w-glibc": 2,
        "map-2w-glibc": 2}


PEER_METHODS = ("pillow", "pool", "lithops", "cold-1w", "cold-2w", "warm-2w", "halfdup-2w")


def test_peer_benchmark_measures_every_method_and_sqlite_lookups(tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos")
    run = run_benchmark("bench_peers.py", [
        "--photos", str(photos), "--rounds", "2", "--limit", "3", "--record-counts", "10,100",
        "--couch-counts", "none", "--lookups", "5"], tmp_path / "out")
    assert_complete(run, [*(f"{tag}.{method}" for tag in ("1", "6") for method in PEER_METHODS),
                          "r.sqlite.10", "r.sqlite.100"])
    walls = run.results["timings"]["wall_s_by_round"]
    lithops = run.results["extra"]["lithops_failure"]
    for tag in ("1", "6"):
        for method in PEER_METHODS:
            if method == "lithops" and lithops:  # not installed, or cannot run: it says why
                assert f"{tag}/lithops" not in walls
                assert f"not run: {lithops}" in {c["measured"] for c in run.results["checks"]}
                continue
            assert len(walls[f"{tag}/{method}"]) == 2, method  # one per round
    first, second = run.results["extra"]["orders"]
    assert second == [*first[1:], first[0]]  # the order rotates by one each round
    lookups = run.results["timings"]["lookup_ms"]
    assert {len(lookups[f"sqlite/{n}/{op}"]) for n in (10, 100) for op in ("get", "get_many6")
            } == {5}


@pytest.mark.services
def test_peer_benchmark_measures_couchdb_lookups_and_says_what_it_skipped(
    tmp_path: Path,
) -> None:
    """pouchdb-server started by the benchmark itself (as ``owdedup services`` does)."""
    photos = make_photos(tmp_path / "photos", count=2)
    run = run_benchmark("bench_peers.py", [
        "--photos", str(photos), "--only", "records", "--record-counts", "10",
        "--couch-counts", "10,100", "--couch-max-load-s", "0.001", "--lookups", "5"],
        tmp_path / "out")
    assert_complete(run, ["r.sqlite.10", "r.couchdb.10", "r.couchdb.100"])
    checks = {c["id"]: c for c in run.results["checks"]}
    assert checks["r.couchdb.100"]["measured"].startswith("not run: loading 100 records")
    assert len(run.results["timings"]["lookup_ms"]["couchdb/10/get_many6"]) == 5


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


STUDY_METHODS = ("pillow", "pool", "map-2w", "map-2w-warm", "ow-cold", "ow-warm", "ow-dedup")


def test_thumbnail_study_measures_every_method_through_serve(tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos", count=3)
    run = run_benchmark("bench_study.py", [
        "--photos", str(photos), "--rounds", "2", "--port", str(listen_ports(1)[0])],
        tmp_path / "out", env={"WSKDEPLOY": str(real_wskdeploy())})
    assert_complete(run, [*(f"t.{m}" for m in STUDY_METHODS), "s.warm", "s.dedup", "s.cpu",
                          "s.calls", "s.cold"])
    walls = run.results["wall_s_by_round"]["walls"]
    assert {method: len(walls[method]) for method in STUDY_METHODS} == dict.fromkeys(
        STUDY_METHODS, 2)
    platform = run.results["wall_s_by_round"]["platform"]
    assert [(p["label"], p["invocations"]) for p in platform] == [
        ("ow-cold", 3), ("ow-warm", 3), ("ow-dedup", 0)] * 2
    assert all(p["throttled"] == 0 and p["lost"] == 0 for p in platform)
    cold, warm = (p["cold_starts"] for p in platform[:2])
    assert cold > 0 and warm == 0  # serve restarted before each round's first run
    first, second = run.results["extra"]["orders"]
    assert second == [*first[1:], first[0]]


def test_concurrency_experiment_measures_every_function_and_level(
        tmp_path: Path, services: Services) -> None:
    """The network function downloads from the test session's MinIO; the CPU function is
    also wrapped (owdedup wrap --objects -) and called with repeating inputs."""
    out = tmp_path / "out"
    run = run_benchmark("bench_concurrency.py", [
        "--levels", "1,2", "--calls", "4", "--net-mib", "2", "--io-mib", "2", "--cpu-n", "20",
        "--cpu-depth", "8", "--repeats", "0,50", "--port", str(listen_ports(1)[0])], out,
        env=services.env)
    levels = run.results["levels"]["levels"]
    assert [(lv["function"], lv["concurrency"], lv["calls"]) for lv in levels] == [
        (f, c, 4) for f in ("cpu", "net", "io") for c in (1, 2)]
    for lv in levels:
        assert len(lv["latency_ms"]) == 4 and len(lv["cold_latency_ms"]) == lv["concurrency"]
        # The update before each level retires the warm processes; the level keeps its own.
        assert lv["cold_in_cold"] == lv["concurrency"] and lv["cold_in_warm"] == 0, lv
    assert "concurrent invocations through serve" in run.output
    assert run.chart.startswith(PNG_MAGIC)
    dedup = {(d["repeat_pct"], d["concurrency"]): d for d in run.results["levels"]["dedup"]}
    assert [(p, c, d["calls"], d["distinct"]) for (p, c), d in dedup.items()] == [
        (0, 1, 4, 4), (0, 2, 4, 4), (50, 1, 4, 2), (50, 2, 4, 2)]
    for d in dedup.values():
        assert d["runs"] + d["hits"] == 4 and d["not_recorded"] == 0, d
        assert len(d["latency_ms"]) == 4
    assert dedup[0, 1]["hits"] == dedup[0, 2]["hits"] == 0  # no repeat: every call runs
    # One at a time, each repeat comes after its twin was recorded: it never runs.
    assert dedup[50, 1]["hits"] == 2 and dedup[50, 1]["runs"] == 2
    assert dedup[50, 2]["runs"] >= 2  # two at once: a twin still in flight runs too
    assert "cpu wrapped" in run.output
