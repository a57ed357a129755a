"""The benchmark of the thumbnail through the generic wrapper runs end to end on a tiny photo
(its numbers are not judged here: see tests/benchmarks/bench_run.py); what it counts, it
counts right: one hit through the conductor is one conductor activation and nothing else."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.bench_run import assert_complete, make_photos, run_benchmark
from tests.tooling import need_base_python

CONFIGS = ("direct-new", "direct-dup", "hit", "miss")


def test_wrapped_thumbnail_benchmark_measures_hits_and_misses(tmp_path: Path) -> None:
    need_base_python()  # serve runs the actions on the base interpreter, as the runtime does
    photos = make_photos(tmp_path / "photos", count=1)
    run = run_benchmark("bench_wrapped_thumbnail.py", [
        "--photos", str(photos), "--invokes", "2", "--warmup", "1"], tmp_path / "out")
    assert_complete(run, [*CONFIGS, "fp.sequence", "fp.one-action", "T-hit", "T-miss", "T-acts"])
    assert run.results["extra"]["hit_activations"] == ["thumbnail-dedup"]
    assert {name: len(ms) for name, ms in run.results["invoke_ms"].items()} == {
        name: 2 for name in CONFIGS}
