"""Run actions as OpenWhisk's Python runtime does, each in a Python process of its own.

- The code is unpacked once per code version into a cache folder (a zip as it is, plain
  source as ``__main__.py``), and ``__main__.py`` becomes ``main__.py``, as the runtime's
  ``compile`` step does.
- A process is the base interpreter (``sys._base_executable``, so none of this project's
  site-packages) started with ``-I -S`` on :mod:`owdedup.serve._launcher`; it sees the code
  folder, the action's ``virtualenv`` (through ``activate_this.py``) and an optional
  "runtime site" folder standing for the packages the real runtime preinstalls.
- Warm processes are reused per action version, one activation at a time each; a few are
  kept idle per action.
- Per activation the launcher sets ``__OW_API_HOST``, ``__OW_NAMESPACE``,
  ``__OW_ACTION_NAME``, ``__OW_ACTION_VERSION``, ``__OW_ACTIVATION_ID``, ``__OW_DEADLINE``
  (and ``__OW_API_KEY`` only with the annotation ``provide-api-key: true``).
- Limits: the time limit kills the process (its process group) and the activation says so
  with OpenWhisk's message; a result over 1 MB is an error; logs beyond the log limit are cut.
- The memory limit stands in for the container's memory cgroup: while an activation runs
  (and once it has replied) the process's peak resident size (``VmHWM``, so a spike between
  two looks is still seen) is compared with the action's ``memorySize``; above it the
  process is killed and the activation is a developer error with OpenWhisk's "exhausted its
  memory" message. It counts the action's process, not children it starts, and needs Linux's
  ``/proc`` (elsewhere it is not enforced).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from owdedup.engine.activation import log_line, qualified_path
from owdedup.engine.manifest import ActionDef
from owdedup.serve._launcher import END_MARKER
from owdedup.serve.catalog import MB, RUNTIME_KINDS, is_true, now_ms

LAUNCHER = Path(__file__).with_name("_launcher.py")
RESULT_LIMIT = 1 * MB
PYTHON_KINDS = RUNTIME_KINDS["python"]

RunOutcome = tuple[Any, list[str], bool]


def timed_out(timeout_ms: int, init: bool = False) -> str:
    during = " during initialization" if init else ""
    return f"The action exceeded its time limits of {timeout_ms} milliseconds{during}."


EXITED = "The action did not produce a valid response and exited unexpectedly."
OUT_OF_MEMORY = "The action exhausted its memory and was aborted."
#: How often a running activation's memory is looked at.
MEMORY_POLL_S = 0.02


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident size of ``pid`` so far, in MiB (None where /proc cannot tell)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


class ActionCodeError(Exception):
    """The action's code cannot be unpacked or has no ``__main__.py``."""


class CodeCache:
    """Unpacked action code, one folder per code file, created atomically.

    The files are the catalog's code store's, named by their content's digest
    (``<sha256>.zip`` or ``<sha256>.py``), so a file's stem names its version."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def prepare(self, function: Path) -> Path:
        if function.suffix not in (".zip", ".py") or not function.is_file():
            raise ActionCodeError(f"the action's code is missing: {function}")
        target = self.root / function.stem
        if target.is_dir():
            return target
        temp = self.root / f".{function.stem}.{os.getpid()}.{threading.get_ident()}"
        shutil.rmtree(temp, ignore_errors=True)
        try:
            if function.suffix == ".zip":
                with zipfile.ZipFile(function) as archive:
                    archive.extractall(temp)  # extractall drops absolute and ".." parts
            else:
                temp.mkdir()
                (temp / "__main__.py").write_bytes(function.read_bytes())
            entry = temp / "__main__.py"
            if entry.is_file():
                entry.rename(temp / "main__.py")
            elif not (temp / "main__.py").is_file():
                raise ActionCodeError("Zip file does not include __main__.py")
            try:
                temp.rename(target)
            except OSError:  # another thread unpacked the same code first
                shutil.rmtree(temp, ignore_errors=True)
                if not target.is_dir():  # ... or the rename really failed
                    raise
        except (OSError, zipfile.BadZipFile) as exc:
            shutil.rmtree(temp, ignore_errors=True)
            raise ActionCodeError(f"cannot unpack the action's code: {exc}") from exc
        except ActionCodeError:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return target


@dataclass
class _Reply:
    body: dict[str, Any] | None  # None: timed out, or out of memory
    size: int = 0
    exited: bool = False
    out_of_memory: bool = False


class _Worker:
    """One launcher process: a reply channel and two log streams, read by threads."""

    def __init__(self, argv: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        log_read, log_write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [*argv, str(log_write)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(log_write,), cwd=cwd, env=dict(env),
                start_new_session=True,  # its own process group: a kill takes its children
            )
        except OSError:
            os.close(log_read)
            raise
        finally:
            os.close(log_write)
        self.calls = 0
        self._replies: queue.Queue[bytes | None] = queue.Queue()
        self._cond = threading.Condition()
        self._lines: list[tuple[float, str, str]] = []
        self._markers = {"stdout": 0, "stderr": 0}
        self._eof = {"stdout": False, "stderr": False}
        self._log_bytes = 0
        self._log_limit = 10 * MB
        self._truncated = False
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read_replies, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_logs, args=(os.fdopen(log_read, "rb"), "stdout"),
                             daemon=True),
            threading.Thread(target=self._read_logs, args=(self.proc.stderr, "stderr"),
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_replies(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self._replies.put(line)
        self._replies.put(None)

    def _read_logs(self, stream: IO[bytes], name: str) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                now = time.time()
                with self._cond:
                    if text.endswith(END_MARKER):
                        text = text[: -len(END_MARKER)]
                        self._markers[name] += 1
                        self._cond.notify_all()
                    if text or not raw.endswith(END_MARKER.encode() + b"\n"):
                        self._add_line(now, name, text)
        with self._cond:
            self._eof[name] = True
            self._cond.notify_all()

    def _add_line(self, now: float, name: str, text: str) -> None:
        size = len(text.encode("utf-8", errors="replace")) + 1
        if self._log_bytes + size > self._log_limit:
            self._truncated = True
            return
        self._log_bytes += size
        self._lines.append((now, name, text))

    def over_memory(self, memory_mb: int) -> bool:
        peak = peak_rss_mb(self.proc.pid)
        return peak is not None and peak > memory_mb

    def reply(self, deadline: float, memory_mb: int | None = None) -> _Reply:
        """The next reply; None as its body when the deadline passes or the process goes
        over ``memory_mb`` first."""
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                raw = self._replies.get(
                    timeout=remaining if memory_mb is None else min(remaining, MEMORY_POLL_S))
                break
            except queue.Empty:
                if memory_mb is not None and self.over_memory(memory_mb):
                    return _Reply(None, out_of_memory=True)
                if time.monotonic() >= deadline:
                    return _Reply(None)
        # A process that went over and replied in between: the cgroup would have killed it.
        if memory_mb is not None and raw is not None and self.over_memory(memory_mb):
            return _Reply(None, out_of_memory=True)
        if raw is None:
            return _Reply({}, exited=True)
        try:
            body = json.loads(raw)
        except ValueError:
            return _Reply({}, exited=True)
        return _Reply(body if isinstance(body, dict) else {}, size=len(raw))

    def call(self, request: dict[str, Any], deadline: float, log_limit: int,
             memory_mb: int | None = None) -> _Reply:
        with self._cond:
            self._log_limit = log_limit
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except OSError:
            return _Reply({}, exited=True)
        reply = self.reply(deadline, memory_mb)
        if reply.body is not None and not reply.exited:
            self.calls += 1
        return reply

    def take_logs(self, wait_s: float = 2.0, until_eof: bool = False
                  ) -> tuple[list[tuple[float, str, str]], bool]:
        """The log lines since the last call, once both streams reached their end marker
        (or, for a process that was killed, their end)."""

        def complete() -> bool:
            return all(self._eof[s] or (not until_eof and self._markers[s] >= self.calls)
                       for s in self._eof)

        with self._cond:
            self._cond.wait_for(complete, timeout=wait_s)
            lines, truncated = self._lines, self._truncated
            self._lines, self._truncated, self._log_bytes = [], False, 0
        return lines, truncated

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reap()

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap()

    def _reap(self) -> None:
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return
        for thread in self._threads:
            thread.join(timeout=2)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class _Pool:
    """Idle warm processes by action version; an action's older versions are retired."""

    def __init__(self, per_action: int) -> None:
        self.per_action = per_action
        self._idle: dict[str, list[_Worker]] = {}
        self._current: dict[str, str] = {}  # action fqn -> key of its current version
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self.closed = False

    def acquire(self, fqn: str, key: str) -> _Worker | None:
        retired: list[_Worker] = []
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

    def busy(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.add(worker)

    def release(self, fqn: str, key: str, worker: _Worker | None, reusable: bool) -> None:
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
        self._env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8",
                     "LC_ALL": "C.UTF-8", "HOME": os.environ.get("HOME", "/tmp"),
                     **(env or {})}

    def run(self, action: ActionDef, params: dict[str, Any], activation_id: str) -> RunOutcome:
        """(result, log lines, crashed) as the engine expects; never raises for the action's
        own failures. *activation_id* becomes the action's ``__OW_ACTIVATION_ID``."""
        interpreter = self.interpreters.get(action.runtime)
        if interpreter is None:
            kinds = ", ".join(sorted(self.interpreters))
            return ({"error": f"kind {action.runtime!r} cannot run on this development server "
                              f"(it runs {kinds})"}, [], True)
        timeout_ms = action.limits.timeout_ms
        deadline = time.monotonic() + timeout_ms / 1000
        log_limit = action.limits.log_mb * MB
        try:
            code_dir = self._cache.prepare(Path(action.function))
        except ActionCodeError as exc:
            return {"error": f"Cannot start action: {exc}"}, [], True
        version = self.action_version(action)
        key = "\0".join((action.fqn, version, str(code_dir), action.main, interpreter))
        worker = self._pool.acquire(action.fqn, key)
        fresh = worker is None
        init_start = time.monotonic()
        try:
            if worker is None:
                worker = _Worker(self._argv(interpreter, code_dir, action.main), code_dir,
                                 self._env)
            self._pool.busy(worker)
        except OSError as exc:
            return {"error": f"Cannot start action: {exc}"}, [], True
        memory_mb = action.limits.memory_mb
        if fresh:
            ready = worker.reply(deadline, memory_mb)
            if ready.body is None or "ok" not in ready.body:
                worker.kill()
                lines, truncated = worker.take_logs(until_eof=True)
                self._pool.release(action.fqn, key, worker, reusable=False)
                if ready.out_of_memory:
                    message = OUT_OF_MEMORY
                elif ready.body is None:
                    message = timed_out(timeout_ms, init=True)
                else:
                    detail = ready.body.get("init_error") or "the process exited"
                    message = f"Cannot start action: {detail}. Check logs for details."
                return {"error": message}, _format(lines, truncated, log_limit), True
            self._init_ms[activation_id] = int((time.monotonic() - init_start) * 1000)
        reply = worker.call(self._request(action, params, activation_id, version, timeout_ms),
                            deadline, log_limit, memory_mb)
        if reply.body is None or reply.exited:
            worker.kill()
            lines, truncated = worker.take_logs(until_eof=True)
            self._pool.release(action.fqn, key, worker, reusable=False)
            if reply.out_of_memory:
                message = OUT_OF_MEMORY
            else:
                message = timed_out(timeout_ms) if reply.body is None else EXITED
            return {"error": message}, _format(lines, truncated, log_limit), True
        lines, truncated = worker.take_logs()
        self._pool.release(action.fqn, key, worker, reusable=True)
        logs = _format(lines, truncated, log_limit)
        if reply.size > RESULT_LIMIT:
            return ({"error": "The action produced a response that exceeded the allowed "
                              f"length: {reply.size} > {RESULT_LIMIT} bytes."}, logs, True)
        return reply.body.get("result"), logs, bool(reply.body.get("crashed"))

    def close(self) -> None:
        self._pool.close()

    def take_init_ms(self, activation_id: str) -> int | None:
        """How long *activation_id*'s cold start took (its record's ``initTime``); None for
        a warm start. Asked once per activation."""
        return self._init_ms.pop(activation_id, None)

    def discard_code(self, digest: str) -> None:
        """Drop the unpacked copy of code no action uses any more."""
        shutil.rmtree(self._cache.root / digest, ignore_errors=True)

    def _argv(self, interpreter: str, code_dir: Path, main: str) -> list[str]:
        site = str(self.runtime_site) if self.runtime_site is not None else ""
        return [interpreter, "-I", "-S", "-u", str(LAUNCHER), str(code_dir), main, site]

    def _request(self, action: ActionDef, params: dict[str, Any], activation_id: str,
                 version: str, timeout_ms: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "value": params,
            "api_host": self.api_host,
            "namespace": self.namespace,
            "action_name": "/" + qualified_path(self.namespace, action.fqn),
            "action_version": version,
            "activation_id": activation_id,
            "deadline": str(self.clock_ms() + timeout_ms),
        }
        if self.api_key and is_true(action.annotations.get("provide-api-key")):
            request["api_key"] = self.api_key
        return request


def _format(lines: list[tuple[float, str, str]], truncated: bool, limit: int) -> list[str]:
    """OpenWhisk's log lines, ``<ISO time> <stream>: <text>``, in time order."""
    formatted = [log_line(stream, text, when)
                 for when, stream, text in sorted(lines, key=lambda line: line[0])]
    if truncated:
        formatted.append("Logs were truncated because the total bytes size exceeds the limit "
                         f"of {limit} bytes.")
    return formatted
