"""examples/demo.sh, the README's first command, does what it says: the first run computes
every distinct photo once (the duplicate reuses its twin's output), the second computes
nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.deploying import copy_project
from tests.tooling import need_base_python, real_wsk, real_wskdeploy

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


def test_demo_openwhisk_part_deduplicates_through_wsk(tmp_path: Path) -> None:
    """``demo.sh --openwhisk``: deployed onto ``owdedup serve`` with wskdeploy and invoked with
    the real ``wsk``, the photo the local run computed is deduplicated; the key never shows."""
    real_wskdeploy()
    real_wsk()  # built here if missing, as CI does on a fresh machine
    need_base_python()
    copy_project(tmp_path)
    shutil.copytree(PROJECT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("thumbs", ".owdedup", "*.jsonl"))
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OW_", "OWDEDUP_STORE", "OWDEDUP_RECORDS", "WSK"))}
    done = subprocess.run(
        ["bash", str(tmp_path / "examples" / "demo.sh"), "--openwhisk"], capture_output=True,
        text=True, stdin=subprocess.DEVNULL, timeout=1800, check=False,
        env={**env, "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "status: deduplicated" in done.stdout
    assert "guest/dedup-thumbnail" in done.stdout  # wsk activation list
    keys = re.findall(r"[0-9a-f-]{36}:[A-Za-z0-9]{64}", done.stdout + done.stderr)
    assert keys == []
