"""The in-process executor: the engine wired to the in-process runner and a manifest file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from owdedup.engine.executor import Engine
from owdedup.engine.manifest import load_manifest
from owdedup.engine.runner import InProcessRunner


def default_manifest_path() -> Path:
    """``$OWDEDUP_MANIFEST``, else ``manifest.yaml`` in the current folder, else the copy of
    the project's manifest and actions that is installed with the package."""
    configured = os.environ.get("OWDEDUP_MANIFEST")
    if configured:
        return Path(configured)
    here = Path.cwd() / "manifest.yaml"
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[1] / "bundle" / "manifest.yaml"


def local_executor(
    manifest_path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Engine:
    manifest = load_manifest(Path(manifest_path or default_manifest_path()),
                             os.environ if env is None else env)
    return Engine(manifest, InProcessRunner(manifest))
