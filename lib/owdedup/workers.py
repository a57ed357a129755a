"""Worker processes that each hold one local engine (manifest, loaded actions, connections).

``map`` drives its workers through :class:`owdedup.workpool.WorkerPool`, whose processes run
:func:`serve`; ``watch`` uses a ``ProcessPoolExecutor`` (:func:`pool`) with ``init`` as its
initialiser and ``fire`` as its task. Workers ignore SIGINT so that Ctrl-C reaches only the
coordinator, which then lets in-flight work finish, and they die with the coordinator
(:func:`die_with_parent`), so a coordinator killed by SIGKILL leaves no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from owdedup import allocator
from owdedup.engine.activation import Activation
from owdedup.engine.executor import Engine
from owdedup.engine.local import local_executor
from owdedup.runtime import handover
from owdedup.runtime.action import close_contexts
from owdedup.runtime.digest import is_sha256_hex
from owdedup.runtime.errors import ConfigError, OwdedupError

_engine: Engine | None = None  # one per worker process, set by `init`

#: Inputs up to this size are handed from ``hash`` to ``thumbnail`` in memory (one read).
HANDOVER_BYTES = 256 << 20
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def pool(workers: int, manifest: Path | None, env: Mapping[str, str] | None) -> ProcessPoolExecutor:
    _heap_setting(env)  # refused here, in words, not as a pool whose workers cannot start
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),  # no fork: workers start clean
        initializer=init,
        initargs=(manifest, dict(env) if env is not None else None),
    )


def init(manifest: Path | None, env: Mapping[str, str] | None) -> None:
    global _engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    allocator.keep_freed_memory(_heap_setting(env))
    _engine = local_executor(manifest, env)
    handover.enable(HANDOVER_BYTES)


def _heap_setting(env: Mapping[str, str] | None) -> int:
    try:
        return allocator.keep_mib(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _require_engine() -> Engine:
    if _engine is None:
        raise RuntimeError("worker process not initialised")
    return _engine


def invoke(name: str, payload: dict[str, Any]) -> tuple[dict[str, Any], bool, float]:
    """(result, success, milliseconds) of one invocation."""
    started = time.perf_counter()
    activation = _require_engine().invoke(name, payload)
    return activation.result, activation.success, (time.perf_counter() - started) * 1000


def resume(sequence: str, after: str, result: dict[str, Any]) -> tuple[dict[str, Any], bool, float]:
    """(result, success, milliseconds) of the rest of *sequence* after its step *after*."""
    started = time.perf_counter()
    activation = _require_engine().resume(sequence, after, result)
    return activation.result, activation.success, (time.perf_counter() - started) * 1000


def fire(trigger: str, payload: dict[str, Any]) -> Activation:
    return _require_engine().fire(trigger, payload)


# -- the WorkerPool's processes ------------------------------------------------------------------

#: Messages from the coordinator: ("process", hash_action, sequence, payload, claims) (see
#: :func:`process`); None ends the worker. Answers: ("ready",) or ("init-failed", message)
#: once, then per object a note ("note", "claimed", digest) when it claims a digest, and one
#: answer: ("failed", hash_result, ms), ("duplicate", hash_result, ms) or
#: ("computed", hash_result, hash_ms, result, ok, ms).


def serve(conn: Connection, manifest: Path | None, env: Mapping[str, str] | None,
          coordinator: int) -> None:
    """A worker's life: start an engine, then answer the coordinator's requests until told to
    stop or until the coordinator is gone."""
    die_with_parent(coordinator)
    try:
        init(manifest, env)
    except OwdedupError as exc:
        conn.send(("init-failed", str(exc)))
        return
    conn.send(("ready",))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the coordinator is gone
                return
            if message is None:
                return
            _, hash_action, sequence, payload, claims = message
            conn.send(process(hash_action, sequence, payload, Path(claims), conn.send))
    finally:
        close_contexts()  # no exit hooks run in a forked worker: write the buffered counts


def process(hash_action: str, sequence: str, payload: dict[str, Any], claims: Path,
            note: Callable[[tuple[str, ...]], None]) -> tuple[Any, ...]:
    """Hash one object; if no other worker of the run has claimed its digest, claim it and run
    the rest of *sequence* here, on the bytes just hashed (``Engine.resume``).

    Claims are files created exclusively in the run's *claims* folder: the kernel settles a
    race between two workers that hashed the same content, and no worker waits for the
    coordinator. The claim is noted to the coordinator first, so that should this process die
    while computing, the other objects of that content are failed rather than left waiting.
    """
    result, ok, ms = invoke(hash_action, payload)
    digest = result.get("digest")
    if not ok or not isinstance(digest, str) or not is_sha256_hex(digest):
        return ("failed", result, ms)
    try:
        os.close(os.open(claims / digest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        handover.clear()  # another worker computes this content
        return ("duplicate", result, ms)
    note(("note", "claimed", digest))
    return ("computed", result, ms, *resume(sequence, hash_action, result))


def die_with_parent(coordinator: int) -> None:
    """End this process when the coordinator ends, however it ends (SIGKILL included).

    Linux sends SIGKILL when the parent exits (PR_SET_PDEATHSIG); elsewhere, and should the
    parent be gone already, a thread watches for the coordinator's disappearance. A forked
    worker's parent is the coordinator. A forkserver child's parent is the fork server, which
    exits when every holder of its "alive" pipe has gone: the coordinator and, unless they
    close their inherited copy, the workers themselves (which would keep it, and so
    themselves, alive for ever): close that copy.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(alive_fd, int):
        with contextlib.suppress(OSError):  # not inherited (another start method)
            os.close(alive_fd)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    threading.Thread(target=_watch_parents, args=(parent, coordinator), daemon=True,
                     name="die-with-parent").start()


def _watch_parents(parent: int, coordinator: int) -> None:
    while True:
        if os.getppid() != parent or not _alive(coordinator):
            os._exit(1)
        time.sleep(1.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
