"""Run actions as OpenWhisk's runtimes do, each in a process of its own.

The runtime itself is :mod:`owdedup.actionloop` (the one launcher, the unpacking, the
proxy's environment, replies, logs and kill); this module adds what the invoker does:

- Warm processes are reused per action version, one activation at a time each; a few are
  kept idle per action.
- Python kinds run on the base interpreter (``sys._base_executable``, so none of this
  project's site-packages) with ``-S``, seeing the code folder, the action's ``virtualenv``
  and the runtime's preinstalled packages (``runtime_site``); ``nodejs:20`` runs on the
  machine's ``node`` (:mod:`owdedup.actionloop.node`); other kinds (blackbox, docker) are
  accepted by the catalog but answered with an error saying that serve cannot run them.
- Per activation the request carries ``__OW_API_HOST``, ``__OW_NAMESPACE``,
  ``__OW_ACTION_NAME``, ``__OW_ACTION_VERSION``, ``__OW_ACTIVATION_ID``,
  ``__OW_TRANSACTION_ID``, ``__OW_DEADLINE`` (and ``__OW_API_KEY`` only with the annotation
  ``provide-api-key: true``); a new process gets the first activation's values in its
  environment already, as ``/init`` delivers them.
- Limits: init and run each get the whole time limit; past it the process tree is killed and
  the activation says so with OpenWhisk's message; a result over 1 MB is an application
  error carrying the truncated response; logs beyond the log limit are cut with OpenWhisk's
  note.
- The memory limit stands in for the container's memory cgroup: while an activation runs
  (and once it has replied) the process's peak resident size (``VmHWM``, so a spike between
  two looks is still seen) is compared with the action's ``memorySize``; above it the
  process is killed and the activation is a developer error with OpenWhisk's "exhausted its
  memory" message. It counts the action's process, not children it starts, and needs Linux's
  ``/proc`` (elsewhere it is not enforced).
"""

from __future__ import annotations

import json
import secrets
import string
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from owdedup.actionloop import node
from owdedup.actionloop.code import CodeCache, CodeError
from owdedup.actionloop.launcher import LAUNCHER_NAME
from owdedup.actionloop.proxy import (
    CANNOT_START,
    EXECUTION_ENV,
    EXITED,
    NO_BINARY,
    NOT_A_DICTIONARY,
    OUT_OF_MEMORY,
    RESULT_LIMIT,
    ActionProcess,
    Reply,
    init_env,
    timed_out,
    truncated_logs,
    truncated_result,
)
from owdedup.engine.activation import log_line, qualified_path
from owdedup.engine.manifest import ActionDef
from owdedup.serve.catalog import MB, RUNTIME_KINDS, is_true, now_ms

PYTHON_KINDS = RUNTIME_KINDS["python"]

RunOutcome = tuple[Any, list[str], bool]


def transaction_id() -> str:
    """A transaction id shaped like OpenWhisk's (32 letters and digits)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def cannot_run(kind: str) -> str:
    return (f"owdedup serve cannot run actions of kind '{kind}' (it runs "
            f"{', '.join((*PYTHON_KINDS, node.KIND))}); deploy it to OpenWhisk to run it.")


class _Pool:
    """Idle warm processes by action version; an action's older versions are retired."""

    def __init__(self, per_action: int) -> None:
        self.per_action = per_action
        self._idle: dict[str, list[ActionProcess]] = {}
        self._current: dict[str, str] = {}  # action fqn -> key of its current version
        self._busy: set[ActionProcess] = set()
        self._lock = threading.Lock()
        self.closed = False

    def acquire(self, fqn: str, key: str) -> ActionProcess | None:
        retired: list[ActionProcess] = []
        with self._lock:
            old = self._current.get(fqn)
            if old is not None and old != key:
                retired = self._idle.pop(old, [])
            self._current[fqn] = key
            idle = self._idle.get(key, [])
            worker = None
            while idle and worker is None:
                candidate = idle.pop()
                if candidate.alive:
                    worker = candidate
                else:
                    retired.append(candidate)
        for stale in retired:
            stale.close()
        return worker

    def busy(self, worker: ActionProcess) -> None:
        with self._lock:
            self._busy.add(worker)

    def release(self, fqn: str, key: str, worker: ActionProcess | None, reusable: bool) -> None:
        with self._lock:
            if worker is not None:
                self._busy.discard(worker)
            keep = (worker is not None and reusable and not self.closed
                    and self._current.get(fqn) == key
                    and len(self._idle.get(key, [])) < self.per_action)
            if keep and worker is not None:
                self._idle.setdefault(key, []).append(worker)
                return
        if worker is not None and reusable:
            worker.close()
        elif worker is not None:
            worker.kill()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            workers = [w for idle in self._idle.values() for w in idle] + list(self._busy)
            self._idle.clear()
            self._busy.clear()
        for worker in workers:
            worker.kill()


class ProcessRunner:
    """The engine's ``Runner`` for ``owdedup serve``: see the module docstring."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        api_host: str = "",
        namespace: str = "guest",
        api_key: str | None = None,
        runtime_site: Path | None = None,
        interpreters: Mapping[str, str] | None = None,
        warm_per_action: int = 2,
        action_version: Callable[[ActionDef], str] | None = None,
        env: Mapping[str, str] | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.api_host = api_host
        self.namespace = namespace
        self.api_key = api_key
        self.runtime_site = runtime_site
        base = str(getattr(sys, "_base_executable", "") or sys.executable)
        self.interpreters = dict(interpreters or dict.fromkeys(PYTHON_KINDS, base))
        self.action_version = action_version or (lambda _action: "0.0.1")
        self.clock_ms = clock_ms
        self._cache = CodeCache(cache_dir)
        self._pool = _Pool(warm_per_action)
        self._init_ms: dict[str, int] = {}  # activation id -> its cold start's init time
        #: ``__OW_*`` variables of the image itself (the proxy passes those on).
        self._env = dict(env or {})

    def run(self, action: ActionDef, params: dict[str, Any], activation_id: str) -> RunOutcome:
        """(result, log lines, crashed) as the engine expects; never raises for the action's
        own failures. *activation_id* becomes the action's ``__OW_ACTIVATION_ID``."""
        argv = self._command(action)
        if argv is None:
            return {"error": cannot_run(action.runtime)}, [], True
        timeout_ms = action.limits.timeout_ms
        log_limit = action.limits.log_mb * MB
        try:
            code_dir = self._cache.prepare(Path(action.function), action.runtime)
        except CodeError as exc:
            return {"error": NO_BINARY}, [log_line("stderr", str(exc))], True
        version = self.action_version(action)
        key = "\0".join((action.fqn, version, str(code_dir), action.main, *argv))
        worker = self._pool.acquire(action.fqn, key)
        memory_mb = action.limits.memory_mb
        request = self._request(action, params, activation_id, version, timeout_ms)
        if worker is None:  # a cold start: /init, with its own full time limit
            init_start = time.monotonic()
            try:
                worker = ActionProcess([*argv, *self._arguments(action, code_dir)], code_dir,
                                       init_env(request, self._env, self._execution_env(action)))
            except OSError as exc:
                return {"error": CANNOT_START}, [log_line("stderr", str(exc))], True
            self._pool.busy(worker)
            ready = worker.reply(time.monotonic() + timeout_ms / 1000, memory_mb)
            if ready.body is None or not _acknowledged(ready.body):
                message = (OUT_OF_MEMORY if ready.out_of_memory else CANNOT_START
                           if ready.body is not None else timed_out(timeout_ms, init=True))
                return self._failed(action.fqn, key, worker, message, log_limit)
            self._init_ms[activation_id] = int((time.monotonic() - init_start) * 1000)
            request["deadline"] = str(self.clock_ms() + timeout_ms)  # the run's own
        else:
            self._pool.busy(worker)
        deadline = time.monotonic() + timeout_ms / 1000  # the run's own full time limit
        reply = worker.reply(deadline, memory_mb) if worker.send(request, log_limit) \
            else Reply(b"", exited=True)
        worker.mark_end()
        if reply.body is None or reply.exited:
            message = (OUT_OF_MEMORY if reply.out_of_memory else EXITED
                       if reply.exited else timed_out(timeout_ms))
            return self._failed(action.fqn, key, worker, message, log_limit)
        lines, truncated = worker.take_logs()
        self._pool.release(action.fqn, key, worker, reusable=True)
        logs = _format(lines, truncated, log_limit)
        if reply.size > RESULT_LIMIT:
            trunk = reply.body[:RESULT_LIMIT].decode("utf-8", errors="replace")
            return {"error": truncated_result(reply.size, trunk)}, logs, False
        try:
            result = json.loads(reply.body)
        except ValueError:
            result = None
        if not isinstance(result, dict | list):
            return {"error": NOT_A_DICTIONARY}, logs, True
        return result, logs, False

    def _failed(self, fqn: str, key: str, worker: ActionProcess, message: str,
                log_limit: int) -> RunOutcome:
        """A developer error after which the process (and all it started) is killed."""
        worker.kill()
        lines, truncated = worker.take_logs(until_eof=True)
        self._pool.release(fqn, key, worker, reusable=False)
        return {"error": message}, _format(lines, truncated, log_limit), True

    def close(self) -> None:
        self._pool.close()

    def take_init_ms(self, activation_id: str) -> int | None:
        """How long *activation_id*'s cold start took (its record's ``initTime``); None for
        a warm start. Asked once per activation."""
        return self._init_ms.pop(activation_id, None)

    def discard_code(self, digest: str) -> None:
        """Drop the unpacked copies of code no action uses any more."""
        self._cache.discard(digest)

    def _command(self, action: ActionDef) -> list[str] | None:
        """The program that runs *action*'s kind, None for a kind serve cannot run."""
        interpreter = self.interpreters.get(action.runtime)
        if interpreter is not None:
            # -u: each line reaches the log when it is written, so stdout and stderr keep
            # their order and what a killed activation printed last is not lost in a buffer.
            return [interpreter, "-S", "-u", LAUNCHER_NAME]
        if action.runtime == node.KIND:
            return node.command()
        return None

    @staticmethod
    def _execution_env(action: ActionDef) -> str:
        return node.EXECUTION_ENV if action.runtime == node.KIND else EXECUTION_ENV

    def _arguments(self, action: ActionDef, code_dir: Path) -> list[str]:
        if action.runtime == node.KIND:
            return node.arguments(code_dir, action.main)
        site = [] if self.runtime_site is None else ["--site", str(self.runtime_site)]
        return [action.main, "--subreaper", *site]

    def _request(self, action: ActionDef, params: dict[str, Any], activation_id: str,
                 version: str, timeout_ms: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "value": params,
            "api_host": self.api_host,
            "namespace": self.namespace,
            "action_name": "/" + qualified_path(self.namespace, action.fqn),
            "action_version": version,
            "activation_id": activation_id,
            "transaction_id": transaction_id(),
            "deadline": str(self.clock_ms() + timeout_ms),
        }
        if self.api_key and is_true(action.annotations.get("provide-api-key")):
            request["api_key"] = self.api_key
        return request


def _acknowledged(line: bytes) -> bool:
    """The launcher's ``{"ok": true}`` once the code is loaded (anything else: it did not
    initialise properly, as the proxy says)."""
    try:
        ack = json.loads(line)
    except ValueError:
        return False
    return isinstance(ack, dict) and ack.get("ok") is True


def _format(lines: list[tuple[float, str, str]], truncated: bool, limit: int) -> list[str]:
    """OpenWhisk's log lines, ``<ISO time> <stream>: <text>``, in time order (a stable sort:
    lines read at the same moment keep their order)."""
    formatted = [log_line(stream, text, when)
                 for when, stream, text in sorted(lines, key=lambda line: line[0])]
    if truncated:
        formatted.append(log_line("stderr", truncated_logs(limit)))
    return formatted
