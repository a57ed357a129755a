"""The wrapper's benchmark (benchmarks/bench_wrapped.py) runs end to end on a few calls."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.bench_run import assert_complete, run_benchmark


def test_wrapped_benchmark_measures_every_target(tmp_path: Path) -> None:
    run = run_benchmark("bench_wrapped.py", ["--calls", "2", "--warmup", "1"], tmp_path / "out")
    labels = ("5ms", "150ms", "thumbnail", "thumbnail-pinned")
    assert_complete(run, [f"{kind}.{label}" for label in labels for kind in ("d", "h", "m")])
    assert set(run.results["timings_ms"]) == set(labels)
