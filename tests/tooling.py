"""Tools the heavier tests need, and one rule for when one is missing.

Where a developer lacks a tool (Go, node, a base Python 3.11), the tests that need it are
skipped with the reason. Under ``OWDEDUP_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing
tool fails instead: CI must prove everything, not quietly skip it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

from owdedup.services.config import ServicesConfig
from owdedup.services.install import install_wskdeploy, is_wskdeploy_installed, wskdeploy_path
from owdedup.services.wsk import install_wsk, is_wsk_installed, wsk_path

T = TypeVar("T")


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


def real_wsk() -> Path:
    """The pinned ``wsk`` CLI, built from its Go module on first use (as CI does on a fresh
    machine)."""
    config = ServicesConfig.from_env()
    if not is_wsk_installed(config):
        need_command("go")
        install_wsk(config)
    return wsk_path(config)


def need_base_python() -> str:
    """The CPython 3.11 the project venv was made from: the actions' runtime stand-in, with
    none of the project's packages on its path."""
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    if Path(sys.prefix).resolve() in base.parents:
        missing("cannot find the base interpreter outside the venv")
    version = subprocess.run([base, "-I", "-S", "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != "(3, 11)":
        missing(f"the runtime is CPython 3.11; {base} is {version}")
    return str(base)


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral (outgoing connection) range."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def listen_ports(count: int) -> list[int]:
    """``count`` distinct free ports for servers the tests start, stop and start again.

    They lie below the ephemeral range on purpose: while a server is stopped, a client's
    outgoing connection may take its (ephemeral) port as its own source port, and the
    restart then finds the port in use. ``bind(("", 0))`` would hand out exactly such ports.
    """
    low, high = 20000, max(20000 + 1000, _ephemeral_low())
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(low, high)
        if port in chosen:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def wait_until(predicate: Callable[[], T | None], *, timeout: float, what: str,
               interval: float = 0.5, ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    It is called at least once, and once more after ``timeout`` seconds have passed; an
    exception in ``ignore`` (a service restarting, say) counts as "not yet". Past the
    deadline: an AssertionError naming ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def copy_of_the_project(folder: Path, actions: dict[str, str]) -> Path:
    """The manifest the local engine runs by default and its ``actions/``, copied into
    *folder* (nothing else: from the repository that manifest's folder is the whole
    checkout), with the action files named in *actions* replaced by their source; the
    copy's ``manifest.yaml``."""
    from owdedup.engine.local import default_manifest_path

    manifest = default_manifest_path()
    folder.mkdir(parents=True)
    shutil.copyfile(manifest, folder / "manifest.yaml")
    shutil.copytree(manifest.parent / "actions", folder / "actions")
    for name, source in actions.items():
        (folder / "actions" / name).write_text(source)
    return folder / "manifest.yaml"
