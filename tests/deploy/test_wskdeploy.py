"""The wskdeploy installer: the build module it generates, and the installed binary."""

from __future__ import annotations

import subprocess

import pytest

from owdedup.services.config import ServicesConfig
from owdedup.services.install import (
    _pseudo_version_stamp,
    is_wskdeploy_installed,
    pseudo_label,
    wskdeploy_build_module,
    wskdeploy_path,
)
from owdedup.services.versions import WSKDEPLOY_BINARY, WSKDEPLOY_MODULE, WSKDEPLOY_VERSION
from tests.tooling import real_wskdeploy


def test_pinned_by_pseudo_version() -> None:
    assert WSKDEPLOY_MODULE == "github.com/apache/openwhisk-wskdeploy"
    assert WSKDEPLOY_VERSION.startswith("v0.0.0-")
    assert _pseudo_version_stamp(WSKDEPLOY_VERSION) == ("0e9b45ff5ff3", "2022-12-21T21:59:44Z")


@pytest.mark.parametrize(
    "version", ["v1.2.3", "v0.0.0-2022-0e9b45ff5ff3", "v0.0.0-2022122121594x-ab"]
)
def test_pseudo_version_stamp_rejects_other_versions(version: str) -> None:
    with pytest.raises(ValueError, match="not a Go pseudo-version"):
        _pseudo_version_stamp(version)


def test_status_label_reuses_the_stamp() -> None:
    assert pseudo_label("v0.0.0-20260212201848-7aac2a2c5b7c") == "2026-02-12 7aac2a2c5b7c"
    assert pseudo_label("v1.2.3") == "v1.2.3"


def test_build_module_requires_exactly_the_pin() -> None:
    text = wskdeploy_build_module()
    assert f"require {WSKDEPLOY_MODULE} {WSKDEPLOY_VERSION}\n" in text
    assert text.count("require") == 1


def test_binary_lives_in_the_cache_bin() -> None:
    config = ServicesConfig.from_env({"OWDEDUP_SERVICES_HOME": "/x"})
    assert str(wskdeploy_path(config)) == f"/x/bin/{WSKDEPLOY_BINARY}"
    assert not is_wskdeploy_installed(config)


def test_installed_binary_runs() -> None:
    done = subprocess.run([real_wskdeploy(), "version"], capture_output=True, text=True,
                          check=True)
    assert f"wskdeploy version: {WSKDEPLOY_VERSION}" in done.stdout
