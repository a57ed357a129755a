"""The wrapper benchmark runs end to end on a tiny photo (its numbers are not judged here: see
tests/benchmarks/bench_run.py); what it counts, it counts right: one hit through the
conductor is one conductor activation and nothing else."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.bench_run import assert_complete, make_photos, run_benchmark
from tests.tooling import need_base_python


def test_wrapped_benchmark_measures_hits_and_misses_of_both_actions(tmp_path: Path) -> None:
    need_base_python()  # serve runs the actions on the base interpreter, as the runtime does
    photos = make_photos(tmp_path / "photos", count=1)
    run = run_benchmark("bench_wrapped.py", ["--photos", str(photos), "--invokes", "2",
                                             "--warmup", "1"], tmp_path / "out")
    assert_complete(run, [
        "w.direct", "w.hit", "w.miss", "w.T-hit", "w.T-miss", "w.T-acts",
        "t.direct-new", "t.direct-dup", "t.hit", "t.miss", "t.T-hit", "t.T-miss", "t.T-acts",
    ])
    assert run.results["extra"]["hit_activations"] == {
        "work5-dedup": ["work5-dedup"], "thumbnail-dedup": ["thumbnail-dedup"]}
    assert {name: len(ms) for name, ms in run.results["invoke_ms"].items()} == {
        name: 2 for name in ("work5/direct", "work5/hit", "work5/miss", "thumbnail/direct-new",
                             "thumbnail/direct-dup", "thumbnail/hit", "thumbnail/miss")}
