"""examples/demo.sh, the README's first command, does what it says: the first run computes
every distinct photo once (the duplicate reuses its twin's output), the second computes
nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]


def _results(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if "key" in line]  # the summary line has no key


def test_demo_computes_each_distinct_photo_once(tmp_path: Path) -> None:
    # A copy of the project's examples beside the venv this test runs in, so the demo neither
    # installs anything nor leaves files in the checkout.
    shutil.copytree(PROJECT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("thumbs", ".owdedup", "*.jsonl"))
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    done = subprocess.run(
        ["bash", str(tmp_path / "examples" / "demo.sh")], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=300, check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stdout + done.stderr

    photos = sorted(p.name for p in (tmp_path / "examples" / "photos").iterdir())
    first = {r["key"]: r for r in _results(tmp_path / "examples" / "first.jsonl")}
    second = {r["key"]: r for r in _results(tmp_path / "examples" / "second.jsonl")}
    assert sorted(first) == sorted(second) == photos
    twins = ("rocket.jpg", "rocket-copy.jpg")
    assert sorted(first[name]["status"] for name in twins) == ["computed", "deduplicated"]
    assert {r["status"] for key, r in first.items() if key not in twins} == {"computed"}
    assert {r["status"] for r in second.values()} == {"deduplicated"}
    for key in photos:  # the same outputs both times, two sizes each, all on disk
        keys = [o["key"] for o in first[key]["outputs"]]
        assert keys == [o["key"] for o in second[key]["outputs"]] and len(keys) == 2
        assert all((tmp_path / "examples" / "thumbs" / k).is_file() for k in keys)
    assert [o["key"] for o in first[twins[0]]["outputs"]] == \
        [o["key"] for o in first[twins[1]]["outputs"]]
    assert "== second run: everything is deduplicated" in done.stdout
