"""The zips of a user's project (``examples/wrapped``): actions that are neither owdedup's steps
nor registered functions, and the conductor taken from the installed package (issue 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from owdedup.deploy.build import plan_build
from owdedup.deploy.needs import declared_requirements
from owdedup.deploy.runtime import BuildError
from tests.conftest import PROJECT

EXAMPLES = PROJECT / "examples" / "wrapped"


def test_the_examples_plan_one_zip_per_file_with_their_declared_requirements() -> None:
    plan = plan_build(EXAMPLES / "manifest.yaml")
    by_name = {action.name: action for action in plan.actions}
    # two conductors share one zip: planned (and built) once
    assert [action.name for action in plan.actions] == ["image_metadata", "dedup", "matmul"]
    assert by_name["image_metadata"].requires == ("minio", "pillow")
    assert "pillow" in {pin.name for pin in by_name["image_metadata"].packages}
    assert by_name["matmul"].requires == ("minio",)
    assert "pillow" not in {pin.name for pin in by_name["matmul"].packages}
    # the project has no actions/dedup.py: the installed owdedup's own conductor is used
    conductor = by_name["dedup"]
    assert conductor.source.read_bytes() == (PROJECT / "actions" / "dedup.py").read_bytes()
    assert "ibmcloudant" in conductor.requires
    assert {path.name for path in EXAMPLES.joinpath("actions").iterdir()} >= {
        "image_metadata.py", "matmul.py"}
    assert not EXAMPLES.joinpath("actions", "dedup.py").exists()


def project_with(tmp_path: Path, source: str) -> Path:
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "mine.py").write_text(source)
    (tmp_path / "manifest.yaml").write_text(
        "packages:\n  p:\n    actions:\n      mine:\n        function: build/actions/mine.zip\n"
        "        runtime: python:3.11\n")
    return tmp_path / "manifest.yaml"


def test_an_action_that_declares_nothing_is_refused_with_the_way_out(tmp_path: Path) -> None:
    manifest = project_with(tmp_path, "def main(params):\n    return {}\n")
    with pytest.raises(BuildError, match=r"mine\.py has no '# /// script' block"):
        plan_build(manifest)


def test_an_action_may_need_nothing(tmp_path: Path) -> None:
    manifest = project_with(tmp_path, "# /// script\n# dependencies = []\n# ///\n"
                                      "def main(params):\n    return {}\n")
    (only,) = plan_build(manifest).actions
    assert only.requires == () and only.packages == ()


def test_the_block_is_read_as_the_identity_of_a_python_file_reads_it(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text('# /// script\n# dependencies = ["Pillow>=10", "minio[extra]"]\n# ///\n')
    assert declared_requirements(source) == ("Pillow", "minio")
    source.write_text("# /// script\n# dependencies = [\n# ///\n")
    with pytest.raises(BuildError, match="is not TOML"):
        declared_requirements(source)
