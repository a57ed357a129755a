"""The functional tier's fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functional.test_cli import Cli


@pytest.fixture
def cli(tmp_path: Path, env: dict[str, str]) -> Cli:
    """The ``owdedup`` command, run in *tmp_path* against this test's stores."""
    return Cli(tmp_path, env)
