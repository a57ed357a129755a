"""``owdedup invoke``'s checks of its destination (issue 8, item 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functional.test_cli import Cli, photos


@pytest.fixture
def cli(tmp_path: Path, env: dict[str, str]) -> Cli:
    return Cli(tmp_path, env)


def test_invoke_refuses_the_source_bucket_as_destination(cli: Cli, store_root: Path) -> None:
    photos(store_root, 1)
    proc = cli("invoke", "thumbnail", "photos/p0.jpg", "photos")
    assert proc.returncode == 1
    assert "outputs would become inputs" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (store_root / "photos").iterdir()) == ["p0.jpg"]


def test_a_destination_that_is_a_file_is_named_with_the_cause(
    cli: Cli, store_root: Path
) -> None:
    photos(store_root, 1)
    (store_root / "out.jpg").write_bytes(b"a file, not a folder")
    proc = cli("invoke", "thumbnail", "photos/p0.jpg", "out.jpg")
    assert proc.returncode == 1
    assert "p0.jpg: cannot use 'out.jpg' as a bucket" in proc.stdout
    assert "is not a folder" in proc.stdout and "Errno" not in proc.stdout
