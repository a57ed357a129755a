"""What ``map`` lists and names: an unreadable sub-folder is reported, not skipped; distinct
inputs whose --materialize copies would share a name are refused before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.test_cli import Cli, by_status, photos
from tests.imagegen import jpeg, png
from tests.tooling import need_command

pytestmark = pytest.mark.functional


def without_root_override() -> list[str]:
    """A prefix that makes permissions bind: root reads any folder unless it gives up
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv's bounding set applies at exec)."""
    if os.geteuid() != 0:
        return []
    return [need_command("setpriv"), "--bounding-set=-dac_override,-dac_read_search"]


def test_an_unreadable_sub_folder_is_a_failed_entry(cli: Cli, store_root: Path) -> None:
    photos(store_root, 2)
    locked = store_root / "photos" / "locked"
    locked.mkdir()
    (locked / "hidden.jpg").write_bytes(jpeg(100, 80))
    locked.chmod(0)
    try:
        proc = subprocess.run(
            [*without_root_override(), sys.executable, "-m", "owdedup", "map", "thumbnail",
             "photos", "thumbs", "-q", "--results", "r.jsonl"],
            cwd=cli.cwd, env=cli.env, capture_output=True, text=True, timeout=300)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    rows = {r["key"]: r for r in map(json.loads, (cli.cwd / "r.jsonl").read_text().splitlines())}
    assert by_status(list(rows.values())) == {"computed": 2, "failed": 1}
    assert rows["locked/"]["error"] == (
        "locked/: cannot list folder photos/locked/: Permission denied")
    assert "photos/locked/" in proc.stdout + proc.stderr


def test_materialize_refuses_inputs_whose_copies_would_share_a_name(
    cli: Cli, store_root: Path
) -> None:
    contents = {"a": jpeg(300, 200), "a.jpg": jpeg(320, 200), "a.png": png(200, 300)}
    for name, data in contents.items():
        (store_root / "photos" / name).write_bytes(data)
    code, rows = cli.map("--materialize")
    assert code == 1
    by_key = {r["key"]: r for r in rows}
    assert by_status(rows) == {"computed": 1, "failed": 2}
    assert by_key["a"]["status"] == "computed"
    for key in ("a.jpg", "a.png"):
        assert by_key[key]["error"] == (
            f"{key}: its --materialize copies (a_<size>.<ext>) would overwrite those of a; "
            "rename one of them")
        assert by_key[key]["outputs"] == []
    output = store_root / "thumbs" / by_key["a"]["outputs"][0]["key"]
    assert (store_root / "thumbs" / "a_256.jpg").read_bytes() == output.read_bytes()
    assert len(list((store_root / "thumbs").rglob("*.jpg"))) == 2  # a's output and its copy
