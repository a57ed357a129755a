"""Run a benchmark script as a user would and read what it wrote (shared by the smoke tests).

The smoke tests prove the scripts still run end to end on tiny inputs and write every
measurement, its table and its chart; they never judge the numbers (speed is the benchmarks'
business, on real photos, not the tests').
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.imagegen import picture

PROJECT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class BenchRun:
    returncode: int
    output: str
    results: dict[str, Any]
    chart: bytes

    @property
    def check_ids(self) -> list[str]:
        return [check["id"] for check in self.results["checks"]]


def make_photos(folder: Path, count: int = 4) -> Path:
    """``count`` generated JPEG photos of slightly different sizes (no corpus needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        picture(800 + 40 * index, 600).save(folder / f"photo-{index}.jpg", quality=90)
    return folder


def run_benchmark(script: str, args: Sequence[str], out: Path,
                  env: Mapping[str, str] | None = None, timeout_s: float = 600) -> BenchRun:
    done = subprocess.run(
        [sys.executable, str(PROJECT / "benchmarks" / script), "--out", str(out), *args],
        cwd=PROJECT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout_s, check=False,
    )
    output = done.stdout + done.stderr
    # 0: every target met, 1: one missed (tiny inputs say nothing about speed); else a crash.
    # (A refusal by sys.exit("...") is 1 as well, but writes no results.)
    assert done.returncode in (0, 1) and (out / "results.json").exists(), output
    results = json.loads((out / "results.json").read_text())
    return BenchRun(done.returncode, output, results, (out / "chart.png").read_bytes())


def assert_complete(run: BenchRun, expected_ids: Sequence[str]) -> None:
    """Every expected measurement is there, measured, judged where it has a target, and
    printed; the exit code agrees with the verdicts; the chart is a PNG."""
    assert run.check_ids == list(expected_ids)
    for check in run.results["checks"]:
        assert check["measured"], check
        if check["target"] is not None:
            # Compared either as a ratio (local, services) or as a value (actions).
            compared = check.get("ratio", check.get("value"))
            assert isinstance(compared, float), check
            assert check["passed"] in (True, False), check
        # Its row of the printed table (the first column holds the id).
        assert re.search(rf"│ {re.escape(check['id'])}\s+│", run.output), check["id"]
    failed = [c["id"] for c in run.results["checks"] if c["passed"] is False]
    assert run.returncode == (1 if failed else 0), failed
    assert run.chart.startswith(PNG_MAGIC)
