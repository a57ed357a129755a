"""Worker processes for ``map``: started once, reused for every task, replaced when one dies.

Why not ``ProcessPoolExecutor``: when one of its workers dies (the out-of-memory killer, a
decoder crash) every pending future fails with ``BrokenProcessPool`` and nobody can say which
object the dead worker held. Here each worker runs one task at a time, known by its tag, so
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
from collections import deque
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
#: Tasks queued per worker: the next one is in its pipe when the current one ends.
DEPTH = 2


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
        # Its tasks in the order it runs them: the first is running, the others wait in its
        # pipe, so that it never waits for the coordinator between two tasks.
        self.queue: deque[tuple[Hashable, tuple[Any, ...]]] = deque()

    def died(self) -> WorkerDied:
        self.process.join(5)
        code = self.process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return WorkerDied(f"the worker process was killed by {name}{hint}")
        return WorkerDied(f"the worker process ended unexpectedly (exit code {code})")


class WorkerPool:
    """*size* worker processes; ``start`` queues a task on the least busy one (at most
    :data:`DEPTH` each), ``wait`` collects answers and notes."""

    def __init__(self, size: int, manifest: Path | None, env: Mapping[str, str] | None) -> None:
        self._manifest = manifest
        self._env = dict(env) if env is not None else None
        self._workers: list[_Worker] = []
        try:  # all started first, so that they start up side by side
            self._workers = [_Worker(manifest, self._env) for _ in range(size)]
            for worker in self._workers:
                self._ready(worker)
        except BaseException:
            self.close()
            raise

    def _new_worker(self) -> _Worker:
        worker = _Worker(self._manifest, self._env)
        self._ready(worker)
        return worker

    def _ready(self, worker: _Worker) -> None:
        try:
            hello = worker.conn.recv()
        except EOFError:
            raise ConfigError(f"a map worker could not start: {worker.died().reason}") from None
        if hello[0] != "ready":
            worker.process.join(5)
            raise ConfigError(f"a map worker could not start: {hello[1]}")

    def free(self, pending: int) -> int:
        """How many of *pending* tasks to queue now.

        Behind a running task while more than one task per worker remains; at the end of
        the work only on idle workers: a task queued behind a long one would wait while
        another worker idles (on 36 photos, 1 % of a 2-worker run's time)."""
        depth = DEPTH if pending > len(self._workers) else 1
        return sum(max(0, depth - len(w.queue)) for w in self._workers)

    @property
    def busy(self) -> bool:
        return any(w.queue for w in self._workers)

    def start(self, tag: Hashable, message: tuple[Any, ...]) -> None:
        worker = min(self._workers, key=lambda w: len(w.queue))
        worker.queue.append((tag, message))
        with contextlib.suppress(OSError):  # its death is reported by the next wait()
            worker.conn.send(message)

    def wait(self) -> list[tuple[Hashable, Any]]:
        """What has arrived, as (tag, answer); a note (``("note", ...)``) leaves the task
        running, anything else ends it. A dead worker's running task gets a
        :class:`WorkerDied`, its waiting tasks go to the fresh worker that replaces it.
        Blocks until there is something."""
        waiting = {w.conn: w for w in self._workers if w.queue}
        answers: list[tuple[Hashable, Any]] = []
        for conn in wait(list(waiting)) if waiting else []:
            worker = waiting[conn]  # type: ignore[index]
            try:
                answer: Any = worker.conn.recv()
            except (EOFError, OSError):
                tag, _ = worker.queue.popleft()
                answers.append((tag, worker.died()))
                self._replace(worker)
                continue
            if isinstance(answer, tuple) and answer[:1] == ("note",):
                answers.append((worker.queue[0][0], answer))
            else:
                answers.append((worker.queue.popleft()[0], answer))
        return answers

    def _replace(self, dead: _Worker) -> None:
        dead.conn.close()
        fresh = self._new_worker()
        self._workers[self._workers.index(dead)] = fresh
        for tag, message in dead.queue:
            self.start(tag, message)

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

