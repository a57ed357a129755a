"""The rule for missing tools: skip for a developer, fail in CI."""

from __future__ import annotations

import pytest

from tests.tooling import missing, need_command


def test_missing_tool_skips_without_the_requirement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OWDEDUP_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no such tool"):
        missing("no such tool")


def test_missing_tool_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OWDEDUP_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="required here, but no such tool"):
        missing("no such tool")
    with pytest.raises(pytest.fail.Exception, match="owdedup-no-such-command"):
        need_command("owdedup-no-such-command")
    assert need_command("sh").endswith("/sh")
