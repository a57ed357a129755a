"""The package's main boundary: ``owdedup.runtime`` ships inside actions, the tooling beside it.

The runtime may import the standard library, its own modules and the third-party packages an
action zip carries; never a tooling module of ``owdedup`` nor a package only the CLI installs.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = PROJECT / "lib" / "owdedup"
RUNTIME_DIR = PACKAGE_DIR / "runtime"
#: Installed by the ``cli`` extra for the tooling; an action zip never carries them.
CLI_ONLY = ("typer", "rich", "confluent_kafka", "yaml", "packaging", "click")


def imported(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield "owdedup.runtime"  # relative: inside the runtime by construction
            elif node.module:
                yield node.module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)


def runtime_files() -> list[Path]:
    return sorted(RUNTIME_DIR.rglob("*.py"))


@pytest.mark.parametrize("path", runtime_files(),
                         ids=lambda p: p.relative_to(RUNTIME_DIR).as_posix())
def test_the_runtime_never_imports_tooling(path: Path) -> None:
    for name in imported(path):
        top = name.split(".")[0]
        if top == "owdedup":
            assert name == "owdedup" or name.startswith("owdedup.runtime"), \
                f"{path.name} imports {name}: the runtime may not import tooling"
        assert top not in CLI_ONLY, f"{path.name} imports {name}, which only the CLI installs"


def test_the_scan_sees_a_violation(tmp_path: Path) -> None:
    # The check above must be able to fail: a file importing the CLI is seen as doing so.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from owdedup.cli import app\n    import rich\n")
    assert {"owdedup.cli", "rich"} <= set(imported(bad))


def test_tooling_is_beside_the_runtime_not_inside() -> None:
    for tooling in ("cli.py", "mapper.py", "watch.py", "workers.py", "workpool.py",
                    "locations.py", "engine", "serve", "services", "deploy"):
        assert (PACKAGE_DIR / tooling).exists(), tooling
        assert not (RUNTIME_DIR / tooling).exists(), tooling


def test_the_runtime_install_pulls_no_cli_package() -> None:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for name in ("typer", "rich", "confluent-kafka"):
        assert name not in base, name
    assert any("typer" in r for r in project["optional-dependencies"]["cli"])


def test_every_package_the_runtime_imports_is_a_declared_dependency() -> None:
    """``pip install owdedup`` must bring what the runtime imports, each named in the base
    dependencies: one that arrives only through another package's requirements (requests
    came with ibmcloudant) disappears the day that package drops it."""
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower().replace("_", "-")
                for r in project["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    imported_names: set[str] = set()
    for path in RUNTIME_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported_names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported_names.add(node.module.split(".")[0])
    third_party = sorted(name for name in imported_names
                         if name not in sys.stdlib_module_names and name != "owdedup")
    assert third_party  # the scan sees the runtime's imports (PIL, minio, ...)
    undeclared = {name: providers.get(name) for name in third_party
                  if not {d.lower().replace("_", "-") for d in providers.get(name, [])}
                  & declared}
    assert not undeclared, f"imported by the runtime but not declared: {undeclared}"
