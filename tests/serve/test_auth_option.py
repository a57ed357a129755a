"""``serve``'s key: from OWDEDUP_SERVE_AUTH, documented first; ``--auth`` still works but is
visible in ``ps``, so it is warned about (issue 8, item 15)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from typer.testing import CliRunner

from tests.serve.test_command import APP, app

KEY = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:" + "k" * 64


def _first_lines(env: dict[str, str], *args: str) -> list[str]:
    proc = subprocess.Popen([sys.executable, "-c", APP, "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not any("wsk property set" in line for line in lines):
            line = proc.stderr.readline()
            assert line, lines
            lines.append(line)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        return lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_help_documents_the_environment_variable_and_the_ps_risk() -> None:
    result = CliRunner().invoke(app(), ["--help"])
    assert result.exit_code == 0
    text = re.sub(r"[\s│]+", " ", result.output)
    assert "OWDEDUP_SERVE_AUTH" in text and "ps" in text


def test_a_key_on_the_command_line_is_warned_about() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OWDEDUP_SERVE_AUTH"}
    lines = _first_lines(env, "--auth", KEY)
    assert lines[0].startswith("warning:") and "OWDEDUP_SERVE_AUTH" in lines[0]
    assert KEY not in lines[0]


def test_a_key_from_the_environment_is_not() -> None:
    lines = _first_lines({**os.environ, "OWDEDUP_SERVE_AUTH": KEY})
    assert not any("warning" in line for line in lines)
    assert not any("generated key" in line for line in lines)  # this key is the one in use
