"""Tools the heavier tests need, and one rule for when one is missing.

Where a developer lacks a tool (Go, node, a base Python 3.11), the tests that need it are
skipped with the reason. Under ``OWDEDUP_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing
tool fails instead: CI must prove everything, not quietly skip it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

from owdedup.services.config import ServicesConfig
from owdedup.services.install import install_wskdeploy, is_wskdeploy_installed, wskdeploy_path


def missing(reason: str) -> NoReturn:
    if os.environ.get("OWDEDUP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required here, but {reason}", pytrace=False)
    pytest.skip(reason)


def need_command(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not on PATH")
    return found


def real_wskdeploy() -> Path:
    """The pinned wskdeploy, built from its Go module on first use."""
    config = ServicesConfig.from_env()
    if not is_wskdeploy_installed(config):
        need_command("go")
        install_wskdeploy(config)
    return wskdeploy_path(config)
