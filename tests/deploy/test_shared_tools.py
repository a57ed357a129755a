"""The deploy build reuses the services' helpers: the cache folder rule and run_tool."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from owdedup.deploy.build import default_cache_dir
from owdedup.deploy.install import _run
from owdedup.deploy.runtime import BuildError
from owdedup.services.config import default_home
from owdedup.services.tools import ServiceError, run_tool


def test_both_caches_follow_one_rule(tmp_path: Path) -> None:
    xdg = {"XDG_CACHE_HOME": str(tmp_path)}
    assert default_cache_dir(xdg) == tmp_path / "owdedup" / "deploy"
    assert default_home(xdg) == tmp_path / "owdedup" / "services"
    assert default_cache_dir({**xdg, "OWDEDUP_DEPLOY_CACHE": "/x/d"}) == Path("/x/d")
    assert default_home({**xdg, "OWDEDUP_SERVICES_HOME": "/x/s"}) == Path("/x/s")
    home = Path.home() / ".cache" / "owdedup"
    assert default_cache_dir({}) == home / "deploy"
    assert default_home({}) == home / "services"


FAILING = [sys.executable, "-c", "import sys; print('\\n'.join(map(str, range(40)))); sys.exit(3)"]


def test_deploy_failures_stay_build_errors() -> None:
    with pytest.raises(BuildError, match=r"(?s)pip thing failed with exit code 3.*\n39$") as info:
        _run(FAILING, "pip thing")
    assert "\n9\n" not in str(info.value)  # only the tail
    assert not isinstance(info.value, ServiceError)


def test_run_tool_raises_service_errors_by_default() -> None:
    with pytest.raises(ServiceError, match="tool failed with exit code 3"):
        run_tool("tool", FAILING)
