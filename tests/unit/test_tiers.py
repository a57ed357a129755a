"""Tier markers follow the folders (tests/conftest.py): ``-m "not services"`` leaves out
every test that would start the real services, integration included."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT


def collected(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args],
                          cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode in (0, 5), done.stdout + done.stderr  # 5: none selected
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_not_services_leaves_out_every_test_that_starts_them() -> None:
    kept = collected("-m", "not services", "tests/services", "tests/integration",
                     "tests/unit/test_compose.py")
    assert not [t for t in kept if t.startswith(("tests/services/", "tests/integration/"))]
    assert [t for t in kept if t.startswith("tests/unit/test_compose.py")]  # no services


def test_each_folder_is_its_tier() -> None:
    ids = collected("-m", "functional or deploy", "tests/functional", "tests/deploy",
                    "tests/serve")
    folders = {test.split("/")[1] for test in ids}
    assert folders == {"functional", "deploy"}
