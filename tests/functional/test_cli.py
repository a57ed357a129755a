"""The ``owdedup`` command end to end: real processes, folder store, SQLite records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.records import open_records
from tests.imagegen import bomb_png, jpeg, not_an_image, png, truncated, unsupported_image


class Cli:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, {**os.environ, **env}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "owdedup", *args], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=300)

    def map(self, *args: str, results: str = "r.jsonl") -> tuple[int, list[dict[str, Any]]]:
        return self.map_paths("photos", "thumbs", *args, results=results)

    def map_paths(self, src: str, dest: str, *args: str,
                  results: str = "r.jsonl") -> tuple[int, list[dict[str, Any]]]:
        out = self.cwd / results  # an absolute *results* stays as it is
        proc = self("map", "thumbnail", src, dest, "--results", str(out), *args)
        assert "Traceback" not in proc.stderr, proc.stderr
        lines = out.read_text().splitlines()
        return proc.returncode, [json.loads(line) for line in lines]


def photos(store_root: Path, count: int) -> list[bytes]:
    made = [jpeg(200 + 10 * i, 150 + 5 * i) for i in range(count)]
    for i, data in enumerate(made):
        (store_root / "photos" / f"p{i}.jpg").write_bytes(data)
    return made


def by_status(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def refs(rows: list[dict[str, Any]]) -> list[list[tuple[str, str, int, int]]]:
    return [[(o["bucket"], o["key"], o["size"], o["bytes"]) for o in r["outputs"]] for r in rows]


def record_count(settings: Any) -> int:
    return sum(s.records for s in open_records(settings.records_url).stats())


def test_second_map_computes_nothing_and_returns_the_same_outputs(
    cli: Cli, store_root: Path, settings: Any
) -> None:
    photos(store_root, 4)
    code, first = cli.map("--workers", "2", "--size", "64,32")
    assert code == 0 and by_status(first) == {"computed": 4}
    code, second = cli.map("--workers", "2", "--size", "64,32", results="r2.jsonl")
    assert code == 0 and by_status(second) == {"deduplicated": 4}
    assert refs(first) == refs(second)
    assert all(o["hit"] for r in second for o in r["outputs"])
    row = first[0]
    assert set(row) == {"key", "status", "outputs", "error", "ms"} and row["error"] is None
    assert [set(o) >= {"bucket", "key", "size"} for o in row["outputs"]] == [True, True]
    assert record_count(settings) == 8  # 4 photos x 2 sizes


def test_duplicates_inside_one_run_are_computed_once(
    cli: Cli, store_root: Path, settings: Any
) -> None:
    data = jpeg(300, 200)
    for name in ("a.jpg", "b.jpg", "sub/c.jpg", "d.jpg"):
        path = store_root / "photos" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    code, rows = cli.map("--workers", "2")
    assert code == 0 and by_status(rows) == {"computed": 1, "deduplicated": 3}
    assert len({r["outputs"][0]["key"] for r in rows}) == 1
    assert len(list((store_root / "thumbs").rglob("*.jpg"))) == 1
    assert record_count(settings) == 1
    (stats,) = open_records(settings.records_url).stats()
    assert (stats.hits, stats.misses) == (3, 1)  # in-run duplicates count as hits
    assert stats.saved_bytes == 3 * (len(data) + rows[0]["outputs"][0]["bytes"])


def test_changed_size_computes_again(cli: Cli, store_root: Path) -> None:
    photos(store_root, 2)
    assert by_status(cli.map("--size", "64")[1]) == {"computed": 2}
    assert by_status(cli.map("--size", "64")[1]) == {"deduplicated": 2}
    assert by_status(cli.map("--size", "48")[1]) == {"computed": 2}
    assert by_status(cli.map("--size", "64", "--format", "webp")[1]) == {"computed": 2}


def test_bad_inputs_fail_alone_and_leave_nothing(
    cli: Cli, store_root: Path, settings: Any
) -> None:
    photos(store_root, 2)
    bad = {
        "empty.jpg": b"",
        "text.jpg": not_an_image(),
        "cut.jpg": truncated(jpeg(400, 300)),
        "cut.png": truncated(png(400, 300, mode="RGB")),
        "bomb.png": bomb_png(30000, 30000),
        "odd.img": unsupported_image(),
    }
    for name, data in bad.items():
        (store_root / "photos" / name).write_bytes(data)
    proc = cli("map", "thumbnail", "photos", "thumbs", "--results", "r.jsonl", "-q")
    assert proc.returncode == 1
    rows = {r["key"]: r for r in map(json.loads, (cli.cwd / "r.jsonl").read_text().splitlines())}
    assert {k for k, r in rows.items() if r["status"] == "failed"} == set(bad)
    assert {k for k, r in rows.items() if r["status"] == "computed"} == {"p0.jpg", "p1.jpg"}
    reasons = {k: rows[k]["error"] for k in bad}
    assert "zero bytes" in reasons["empty.jpg"]
    assert "not an image" in reasons["text.jpg"]
    assert "truncated" in reasons["cut.jpg"] and "truncated" in reasons["cut.png"]
    assert "over the limit" in reasons["bomb.png"]
    assert "unsupported image format" in reasons["odd.img"]
    for key, reason in reasons.items():
        assert reason.startswith(key + ":") and rows[key]["outputs"] == []
        assert key in proc.stdout + proc.stderr  # listed in the summary
    assert len(list((store_root / "thumbs").rglob("*.jpg"))) == 2  # only the good ones
    assert record_count(settings) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [(["map", "thumbnail", "nobucket", "thumbs"], "bucket 'nobucket' does not exist"),
     (["map", "thumbnail", "photos", "thumbs", "--size", "huge"], "bad size"),
     (["map", "thumbnail", "photos", "thumbs", "--store", "ftp://user:pw@host/x"],
      "unknown object store scheme 'ftp'"),
     (["map", "resize", "photos", "thumbs"], "unknown function 'resize'"),
     (["map", "thumbnail", "photos", "photos"], "outputs would become inputs"),
     (["invoke", "thumbnail", "photos/none.jpg", "thumbs"], "photos/none.jpg does not exist")],
)
def test_user_errors_are_one_line(cli: Cli, args: list[str], message: str) -> None:
    proc = cli(*args)
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert message in output and "Traceback" not in output
    assert ":pw@" not in output


def test_invoke_prints_the_result_and_stats_count_it(cli: Cli, store_root: Path) -> None:
    photos(store_root, 1)
    first = cli("invoke", "thumbnail", "photos/p0.jpg", "thumbs", "--size", "32")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["status"] == "computed"
    second = json.loads(cli("invoke", "thumbnail", "photos/p0.jpg", "thumbs",
                            "--size", "32").stdout)
    assert second["status"] == "deduplicated"
    stats = cli("stats")
    assert stats.returncode == 0
    row = next(line for line in stats.stdout.splitlines() if "thumbnail" in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[:4] == ["thumbnail", "1", "1", "1"]  # 1 record, 1 hit, 1 miss


def test_map_summary_reports_counts(cli: Cli, store_root: Path) -> None:
    data = photos(store_root, 2)
    (store_root / "photos" / "dup.jpg").write_bytes(data[0])
    proc = cli("map", "thumbnail", "photos", "thumbs", "-q")
    assert proc.returncode == 0
    summary = dict(
        (cells[0], cells[1]) for cells in
        ([c.strip() for c in line.strip("│ ").split("│")] for line in proc.stdout.splitlines()
         if line.count("│") == 3)
    )
    assert summary["objects"] == "3" and summary["computed"] == "2"
    assert summary["deduplicated"] == "1" and summary["failed"] == "0"


def test_a_known_bad_input_is_counted_apart_by_map_and_stats(
    cli: Cli, store_root: Path, settings: Any
) -> None:
    """Issue 11, item 2: the second run answers the refusal from its negative record."""
    photos(store_root, 1)
    (store_root / "photos" / "broken.jpg").write_bytes(truncated(jpeg(300, 200)))
    code, first = cli.map()
    assert code != 0 and by_status(first) == {"computed": 1, "failed": 1}
    assert not any(row.get("recorded_failure") for row in first)
    proc = cli("map", "thumbnail", "photos", "thumbs", "--results", str(cli.cwd / "r2.jsonl"))
    second = [json.loads(line) for line in (cli.cwd / "r2.jsonl").read_text().splitlines()]
    failed = [row for row in second if row["status"] == "failed"]
    assert [row["key"] for row in failed] == ["broken.jpg"]
    assert failed[0]["recorded_failure"] is True and "truncated" in failed[0]["error"]
    assert failed[0]["error"] == next(r for r in first if r["status"] == "failed")["error"]
    assert "known bad inputs (not read again)" in proc.stdout
    (stats,) = open_records(settings.records_url).stats()
    assert (stats.records, stats.failures) == (1, 1)
    cli.env["COLUMNS"] = "160"  # the table has a column more: refusals
    table = cli("stats").stdout
    row = next(line for line in table.splitlines() if "thumbnail" in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[1] == "1" and cells[-2:] == ["1", "1"]  # 1 record; 1 refusal, used once
