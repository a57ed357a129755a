"""``owdedup services`` fails cleanly on a bad setting: one ``error:`` line, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from owdedup.cli import app


@pytest.mark.parametrize("command", [["status"], ["env"], ["logs", "minio"], ["down"]])
def test_bad_port_setting_is_a_clean_error(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OWDEDUP_SERVICES_HOME", str(tmp_path))  # nothing real is touched
    monkeypatch.setenv("OWDEDUP_MINIO_PORT", "x")
    result = CliRunner().invoke(app, ["services", *command])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error:" in result.output
    assert "OWDEDUP_MINIO_PORT must be a port number, not 'x'" in result.output
    assert "Traceback" not in result.output
