"""Worker processes for ``map``: started once, reused for every task, replaced when one dies.

Why not ``ProcessPoolExecutor``: when one of its workers dies (the out-of-memory killer, a
decoder crash) every pending future fails with ``BrokenProcessPool`` and nobody can say which
object the dead worker held. Here each worker holds one task at a time, known by its tag, so
a death fails exactly that task (with the signal that ended the process) and a fresh worker
takes the dead one's place.

Workers are forked from the coordinator once it has imported the runtime and Pillow (as
``multiprocessing.Pool`` forks): they start in milliseconds, share those pages, and do not
re-import everything as ``spawn`` would. A fork copies every lock in the state another thread
left it in, so when the coordinator runs other threads (a progress bar), a worker comes from a
fork server (``forkserver``, with the same modules preloaded) instead: the CLI starts its
workers before its progress bar, so only a replacement for a dead worker takes that path.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import ForkContext, ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from owdedup import workers
from owdedup.runtime.errors import ConfigError

#: Imported before any worker starts, so that no worker imports them again. The fork server
#: also gets ``owdedup.cli`` when the coordinator is the CLI: a forkserver child re-runs the
#: coordinator's main script, and the ``owdedup`` script imports the CLI.
PRELOAD = ("owdedup.workers", "owdedup.runtime.pipeline", "owdedup.runtime.thumbnail")


@dataclass(frozen=True)
class WorkerDied:
    """What a task gets when the process running it ended."""

    reason: str


def context() -> ForkContext | ForkServerContext:
    """``fork`` while this process runs no other thread, else ``forkserver``."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        for module in PRELOAD:
            importlib.import_module(module)
        fork = multiprocessing.get_context("fork")
        assert isinstance(fork, ForkContext)
        return fork
    ctx = multiprocessing.get_context("forkserver")
    assert isinstance(ctx, ForkServerContext)
    ctx.set_forkserver_preload([*PRELOAD, *(m for m in ("owdedup.cli",) if m in sys.modules)])
    return ctx


class _Worker:
    def __init__(self, manifest: Path | None, env: Mapping[str, str] | None) -> None:
        ctx = context()
        self.conn, child = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(
            target=workers.serve, args=(child, manifest, env, os.getpid()), daemon=True,
            name="owdedup-worker",
        )
        self.process.start()
        child.close()  # our copy: the worker's end must be its own, so its death reads as EOF
        self.tag: Hashable | None = None  # the task it holds
        self.expecting = False  # a reply is due

    def died(self) -> WorkerDied:
        self.process.join(5)
        code = self.process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return WorkerDied(f"the worker process was killed by {name}{hint}")
        return WorkerDied(f"the worker process ended unexpectedly (exit code {code})")


class WorkerPool:
    """*size* worker processes; ``start`` gives a task to an idle one, ``wait`` collects
    answers, ``send`` continues with the worker that holds a task, ``release`` frees it."""

    def __init__(self, size: int, manifest: Path | None, env: Mapping[str, str] | None) -> None:
        self._manifest = manifest
        self._env = dict(env) if env is not None else None
        self._workers: list[_Worker] = []
        try:
            for _ in range(size):
                self._workers.append(self._new_worker())
        except BaseException:
            self.close()
            raise

    def _new_worker(self) -> _Worker:
        worker = _Worker(self._manifest, self._env)
        try:
            hello = worker.conn.recv()
        except EOFError:
            raise ConfigError(f"a map worker could not start: {worker.died().reason}") from None
        if hello[0] != "ready":
            worker.process.join(5)
            raise ConfigError(f"a map worker could not start: {hello[1]}")
        return worker

    @property
    def idle(self) -> int:
        return sum(1 for w in self._workers if w.tag is None)

    @property
    def busy(self) -> bool:
        return any(w.tag is not None for w in self._workers)

    def start(self, tag: Hashable, message: tuple[Any, ...]) -> None:
        worker = next(w for w in self._workers if w.tag is None)
        worker.tag = tag
        self._send(worker, message, expect_reply=True)

    def send(self, tag: Hashable, message: tuple[Any, ...], *, expect_reply: bool) -> None:
        self._send(self._holder(tag), message, expect_reply=expect_reply)

    def release(self, tag: Hashable) -> None:
        self._holder(tag).tag = None

    def _holder(self, tag: Hashable) -> _Worker:
        return next(w for w in self._workers if w.tag == tag)

    def _send(self, worker: _Worker, message: tuple[Any, ...], *, expect_reply: bool) -> None:
        worker.expecting = expect_reply
        try:
            worker.conn.send(message)
        except OSError:
            worker.expecting = True  # its death is reported by the next wait()

    def wait(self) -> list[tuple[Hashable, Any]]:
        """The answers that have arrived, as (tag, answer); a dead worker's task gets a
        :class:`WorkerDied` and the worker is replaced. Blocks until there is one."""
        waiting = {w.conn: w for w in self._workers if w.tag is not None and w.expecting}
        if not waiting:
            return []
        answers: list[tuple[Hashable, Any]] = []
        for conn in wait(list(waiting)):
            worker = waiting[conn]  # type: ignore[index]
            try:
                answer: Any = worker.conn.recv()
            except (EOFError, OSError):
                answer = worker.died()
                self._replace(worker)
            worker.expecting = False
            answers.append((worker.tag, answer))
        return answers

    def _replace(self, dead: _Worker) -> None:
        dead.conn.close()
        self._workers[self._workers.index(dead)] = self._new_worker()

    def close(self) -> None:
        """Ask every worker to finish and wait for it; one that does not is killed."""
        for worker in self._workers:
            with contextlib.suppress(OSError):  # already gone
                worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

