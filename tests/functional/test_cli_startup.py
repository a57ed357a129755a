"""What ``owdedup`` imports before it does anything: its subcommands load lazily, so the
help and ``invoke`` load neither the development server nor the services (nor deploy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT
from tests.imagegen import jpeg

#: Run ``owdedup ARGS`` in this interpreter, then print the owdedup modules it imported.
PROBE = """
import json, sys
from owdedup.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("\\nMODULES " + json.dumps({"code": code, "modules": sorted(
    m for m in sys.modules if m.startswith("owdedup"))}))
"""
HEAVY = ("owdedup.serve", "owdedup.services", "owdedup.deploy", "owdedup.mapper",
         "owdedup.watch")


def imported(cwd: Path, env: dict[str, str], *args: str) -> tuple[int, list[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300, check=False)
    head, _, tail = done.stdout.rpartition("\nMODULES ")
    report = json.loads(tail)
    return report["code"], report["modules"], head + done.stderr


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(HEAVY)]


def test_help_imports_no_subcommand_module(tmp_path: Path) -> None:
    code, modules, output = imported(tmp_path, {}, "--help")
    assert code == 0
    for name in ("deploy", "invoke", "map", "serve", "services", "stats", "undeploy", "watch"):
        assert name in output
    assert heavy(modules) == []


def test_invoke_imports_neither_serve_nor_services(
    tmp_path: Path, store_root: Path, env: dict[str, str]
) -> None:
    (store_root / "photos" / "a.jpg").write_bytes(jpeg(120, 90))
    code, modules, output = imported(
        tmp_path, env, "invoke", "thumbnail", "photos/a.jpg", "thumbs", "--size", "32",
        "--manifest", str(PROJECT / "manifest.yaml"))
    assert code == 0, output
    assert '"status": "computed"' in output
    assert heavy(modules) == []


def test_a_lazy_command_still_runs_and_shows_its_help(tmp_path: Path) -> None:
    code, modules, output = imported(tmp_path, {}, "services", "--help")
    assert code == 0 and "status" in output and "owdedup.services.cli" in modules
    code, modules, output = imported(tmp_path, {}, "deploy", "--help")
    assert code == 0 and "--no-kafka-feed" in output and "owdedup.serve.server" not in modules
