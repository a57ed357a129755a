"""SRC and DEST as folder paths (absolute, ./ and ../) on the folder store, for ``map`` and
``invoke``; store names keep working as before (tests/functional/test_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.functional.test_cli import Cli, by_status, photos

pytestmark = pytest.mark.functional


def unconfigured(cwd: Path, env: dict[str, str]) -> Cli:
    """The command in *cwd* with no store configured (records still this test's own)."""
    return Cli(cwd, {**env, "OWDEDUP_STORE": ""})


def results(store_root: Path) -> str:
    """A results file outside every bucket, wherever the command runs."""
    return str(store_root.parent / "r.jsonl")


def test_map_accepts_absolute_and_relative_folder_paths(
    store_root: Path, env: dict[str, str], tmp_path: Path
) -> None:
    photos(store_root, 2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    absolute = unconfigured(elsewhere, env)
    code, rows = absolute.map_paths(str(store_root / "photos"), str(store_root / "thumbs"),
                                     results=results(store_root))
    assert code == 0 and by_status(rows) == {"computed": 2}
    assert len(list((store_root / "thumbs").rglob("*.jpg"))) == 2
    assert not (elsewhere / "thumbs").exists()
    code, rows = unconfigured(store_root, env).map_paths("./photos", "./thumbs",
                                                         results=results(store_root))
    assert code == 0 and by_status(rows) == {"deduplicated": 2}
    code, rows = unconfigured(store_root / "photos", env).map_paths(
        "../photos", "../thumbs", results=results(store_root))
    assert code == 0 and by_status(rows) == {"deduplicated": 2}


def test_a_folder_path_selects_a_sub_folder_not_a_name_prefix(
    store_root: Path, env: dict[str, str]
) -> None:
    for name in ("sub/a.jpg", "subway.jpg"):
        (store_root / "photos" / name).parent.mkdir(exist_ok=True)
        (store_root / "photos" / name).write_bytes(photos(store_root, 1)[0])
    code, rows = unconfigured(store_root, env).map_paths(
        "./photos/sub", "./thumbs", results=results(store_root))
    assert code == 0 and [r["key"] for r in rows] == ["sub/a.jpg"]


def test_invoke_accepts_a_file_path(store_root: Path, env: dict[str, str], tmp_path: Path) -> None:
    photos(store_root, 1)
    proc = unconfigured(tmp_path, env)(
        "invoke", "thumbnail", str(store_root / "photos" / "p0.jpg"), str(store_root / "thumbs"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "computed" and result["key"] == "p0.jpg"
    assert (store_root / "thumbs" / result["outputs"][0]["key"]).is_file()


def test_a_path_outside_the_configured_folder_store_is_refused(
    cli: Cli, store_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    proc = cli("map", "thumbnail", str(outside), str(store_root / "thumbs"))
    assert proc.returncode == 1
    assert f"SRC {str(outside)!r} is outside the store root {store_root}" in proc.stderr
    assert "Traceback" not in proc.stderr
