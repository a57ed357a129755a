"""The ``wsk`` installer: the build module it generates, and the binary it builds."""

from __future__ import annotations

import subprocess
from pathlib import Path

from owdedup.services.config import ServicesConfig
from owdedup.services.versions import (
    GO_BINDATA_MODULE,
    GO_BINDATA_VERSION,
    WSK_MODULE,
    WSK_VERSION,
)
from owdedup.services.wsk import GO_BINDATA_ARGS, is_wsk_installed, wsk_build_module, wsk_path
from tests.tooling import real_wsk


def test_build_module_requires_exactly_the_pins() -> None:
    text = wsk_build_module()
    assert f"require {WSK_MODULE} {WSK_VERSION}\n" in text
    assert f"require {GO_BINDATA_MODULE} {GO_BINDATA_VERSION}\n" in text
    assert text.count("require") == 2


def test_bindata_generates_the_file_the_module_lacks() -> None:
    assert GO_BINDATA_ARGS == ("-nometadata", "-pkg", "wski18n",
                               "-o", "wski18n/i18n_resources.go", "wski18n/resources")


def test_binary_lives_in_the_cache_bin() -> None:
    config = ServicesConfig.from_env({"OWDEDUP_SERVICES_HOME": "/x"})
    assert wsk_path(config) == Path("/x/bin/wsk")
    assert not is_wsk_installed(config)


def test_installed_wsk_runs_with_its_messages(tmp_path: Path) -> None:
    """The i18n resources are compiled in: ``wsk`` prints its English texts, not message
    ids, and reports the pinned build's date as its version."""
    done = subprocess.run([real_wsk(), "property", "get", "--cliversion"], capture_output=True,
                          text=True, check=True,
                          env={"WSK_CONFIG_FILE": str(tmp_path / "wskprops"), "PATH": "/bin"})
    assert "whisk CLI version" in done.stdout
    assert "2024-09-24T14:23:10Z" in done.stdout
    usage = subprocess.run([real_wsk(), "action", "--help"], capture_output=True, text=True,
                           check=True, env={"WSK_CONFIG_FILE": str(tmp_path / "wskprops")})
    assert "create a new action" in usage.stdout


def test_install_tools_command_names_the_binary() -> None:
    from typer.testing import CliRunner

    from owdedup.services.cli import app

    real_wsk()  # built already: the command only confirms it
    done = CliRunner().invoke(app, ["install-tools"])
    assert done.exit_code == 0, done.output
    assert f"wsk: {wsk_path(ServicesConfig.from_env())}" in done.output
