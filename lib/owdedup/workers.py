"""Worker processes that each hold one local engine (manifest, loaded actions, connections).

Used by ``map`` and ``watch`` through a ``ProcessPoolExecutor``: ``init`` is the pool's
initialiser, ``invoke`` and ``fire`` are the tasks. Workers ignore SIGINT so that Ctrl-C
reaches only the coordinator, which then lets in-flight work finish.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from owdedup.engine.activation import Activation
from owdedup.engine.executor import Engine
from owdedup.engine.local import local_executor

_engine: Engine | None = None  # one per worker process, set by `init`


def pool(workers: int, manifest: Path | None, env: Mapping[str, str] | None) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),  # no fork: workers start clean
        initializer=init,
        initargs=(manifest, dict(env) if env is not None else None),
    )


def init(manifest: Path | None, env: Mapping[str, str] | None) -> None:
    global _engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _engine = local_executor(manifest, env)


def _require_engine() -> Engine:
    if _engine is None:
        raise RuntimeError("worker process not initialised")
    return _engine


def invoke(name: str, payload: dict[str, Any]) -> tuple[dict[str, Any], bool, float]:
    """(result, success, milliseconds) of one invocation."""
    started = time.perf_counter()
    activation = _require_engine().invoke(name, payload)
    return activation.result, activation.success, (time.perf_counter() - started) * 1000


def fire(trigger: str, payload: dict[str, Any]) -> Activation:
    return _require_engine().fire(trigger, payload)
