"""Run one action's code in this process, the way the Python runtime would.

The runtime contract is the launcher's own (:func:`owdedup.actionloop.launcher.call`):
``main(params)`` returns a dict (or an array); an uncaught exception becomes
``{"error": str(exc)}`` with the traceback on stderr; stdout and stderr are the
activation's logs. Out of process, with the runtime's environment, limits and the zips
themselves, actions run under ``owdedup serve`` (:mod:`owdedup.actionloop`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from owdedup.actionloop import launcher
from owdedup.actionloop.code import CodeCache, CodeError
from owdedup.actionloop.launcher import MAIN_MODULE
from owdedup.engine.activation import log_line
from owdedup.engine.manifest import ActionDef, Manifest
from owdedup.runtime.errors import ConfigError

Main = Callable[[dict[str, Any]], Any]


def action_source(manifest: Manifest, action: ActionDef) -> Path:
    """The source file behind an action's ``function``.

    ``build/actions/NAME.zip`` is what ``deploy.sh`` builds from ``actions/NAME.py``; locally
    we run the source itself. A ``.py`` file is its own source; a folder holds ``__main__.py``.
    """
    function = Path(action.function)
    if function.suffix == ".zip" and function.parent.as_posix().endswith("build/actions"):
        return manifest.root / "actions" / f"{function.stem}.py"
    path = manifest.root / function
    return path / "__main__.py" if path.is_dir() else path


class InProcessRunner:
    """Loads each action module once and calls its ``main`` with captured logs."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._mains: dict[str, Main] = {}
        self._unpacked: tempfile.TemporaryDirectory[str] | None = None

    def load(self, action: ActionDef) -> Main:
        main = self._mains.get(action.fqn)
        if main is None:
            main = self._mains[action.fqn] = _load_main(self._source(action), action)
        return main

    def _source(self, action: ActionDef) -> Path:
        """The action's source; a zip of the user's own (not one deploy.sh builds from
        ``actions/``) is unpacked by the runtime's unpacker first, and its folder put on
        ``sys.path`` so that its own modules import (its ``virtualenv/`` is not activated
        in process: ``owdedup serve`` runs zips as the runtime does)."""
        source = action_source(self.manifest, action)
        if source.suffix != ".zip":
            return source
        if self._unpacked is None:
            self._unpacked = tempfile.TemporaryDirectory(prefix="owdedup-inprocess-")
        try:
            folder = CodeCache(Path(self._unpacked.name)).prepare(source)
        except CodeError as exc:
            raise ConfigError(f"action {action.fqn}: {exc}") from None
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        return folder / f"{MAIN_MODULE}.py"

    def run(
        self, action: ActionDef, params: dict[str, Any], activation_id: str = ""
    ) -> tuple[Any, list[str], bool]:
        """Returns (result, log lines, crashed). An exception is answered as the Python
        runtime answers it, ``{"error": str(exc)}``: an application error, not a crash."""
        main = self.load(action)
        stdout, stderr = _Stream("stdout"), _Stream("stderr")
        handler = logging.StreamHandler(stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                result = launcher.call(main, params)  # the runtime's own contract
        finally:
            root.removeHandler(handler)
            stdout.flush()
            stderr.flush()
        # In process, nothing can crash the runtime: every failure is an application error.
        return result, sorted(stdout.lines + stderr.lines), False


class _Stream(io.TextIOBase):
    """Collects written text as OpenWhisk log lines: '<ISO time> <stream>: <text>'."""

    def __init__(self, name: str) -> None:
        self.name_ = name
        self.lines: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        now = time.time()
        self.lines += [log_line(self.name_, line, now) for line in complete]
        return len(text)

    def flush(self) -> None:
        """Keep a last line that ended without a newline."""
        if self._partial:
            self.write("\n")


def _load_main(source: Path, action: ActionDef) -> Main:
    if not source.is_file():
        raise ConfigError(f"action {action.fqn}: source {source} not found")
    module_name = f"_owdedup_action_{action.package}_{action.name}".replace("-", "_")
    spec = importlib.util.spec_from_file_location(module_name, source)
    if spec is None or spec.loader is None:
        raise ConfigError(f"action {action.fqn}: cannot load {source}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main = getattr(module, action.main, None)
    if not callable(main):
        raise ConfigError(f"action {action.fqn}: {source} has no function {action.main!r}")
    return main  # type: ignore[no-any-return]
