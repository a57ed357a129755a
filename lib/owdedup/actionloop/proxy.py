"""One action process as the actionloop proxy runs it: environment, replies, logs, kill.

What OpenWhisk's python:3.11 image does (apache/openwhisk-runtime-go ``openwhisk/`` plus the
invoker), reproduced for a local process:

- **Environment.** ``/init`` carries the activation's ``__OW_*`` variables and the proxy adds
  ``__OW_EXECUTION_ENV``, ``__OW_PROXY_VERSION`` and ``__OW_WAIT_FOR_ACK``; the ``exec``
  script exports ``PYTHONIOENCODING``. Those are all the process gets (:func:`init_env`):
  they exist already while the action's module is imported. Each run request then sets the
  ``__OW_*`` variables of its own activation (the launcher does that).
- **Replies.** One JSON line per request on a channel of its own; the first line after start
  is the launcher's ``{"ok": true}``. A result is read only up to the result limit (the rest
  is counted, not kept), so a runaway result cannot grow this process.
- **Logs.** The action's stdout and stderr are pipes; after each request the proxy writes
  ``XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX`` on both (:data:`END_MARKER`), so everything the
  action printed before its reply comes before the marker. Lines are read in bounded chunks:
  a line longer than the log limit is cut, never held whole, and once an activation's logs
  reach the limit the rest is dropped and OpenWhisk's "Logs were truncated ..." line added.
- **Kill.** A timeout, the memory limit or a crash kills the whole tree: the launcher is the
  subreaper of its descendants (``--subreaper``), so a child that called ``setsid()`` or
  daemonised is still found under it; all are stopped first (so none can fork again) and
  then killed. OpenWhisk destroys the container, which does the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1024 * 1024
END_MARKER = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
_MARKER = END_MARKER.encode()
RESULT_LIMIT = 1 * MB
DEFAULT_LOG_LIMIT = 10 * MB
#: What the python:3.11 image's proxy reports about itself (``Version`` in
#: openwhisk-runtime-go, ``OW_EXECUTION_ENV`` in the image's Dockerfile).
PROXY_VERSION = "2.1"
EXECUTION_ENV = "openwhisk/action-python-v3.11"
#: How often a running activation's memory is looked at.
MEMORY_POLL_S = 0.02
_CHUNK = 64 * 1024

# The words OpenWhisk's proxy and invoker use.
NO_BINARY = "The action failed to generate or locate a binary. See logs for details."
CANNOT_START = "Cannot start action. Check logs for details."
NOT_A_DICTIONARY = "The action did not return a dictionary or array."
EXITED = "The action did not produce a valid response and exited unexpectedly."
OUT_OF_MEMORY = "The action exhausted its memory and was aborted."


def timed_out(timeout_ms: int, init: bool = False) -> str:
    during = " during initialization" if init else ""
    return f"The action exceeded its time limits of {timeout_ms} milliseconds{during}."


def truncated_result(length: int, trunk: str, limit: int = RESULT_LIMIT) -> str:
    return (f"The action produced a response that exceeded the allowed length: {length} > "
            f"{limit} bytes. The truncated response was: {trunk}")


def truncated_logs(limit: int) -> str:
    return f"Logs were truncated because the total bytes size exceeds the limit of {limit} bytes."


def init_env(request: Mapping[str, Any], extra: Mapping[str, str] | None = None,
             execution_env: str = EXECUTION_ENV) -> dict[str, str]:
    """The environment of a new action process: the first activation's ``__OW_*`` values
    (as ``/init`` carries them), the proxy's own, ``PYTHONIOENCODING``; nothing of ours."""
    env = {"__OW_EXECUTION_ENV": execution_env, "__OW_PROXY_VERSION": PROXY_VERSION,
           "__OW_WAIT_FOR_ACK": "1", **(extra or {})}
    for key, value in request.items():
        if key != "value":
            env[f"__OW_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["PYTHONIOENCODING"] = "UTF-8"
    return env


# -- the process tree ---------------------------------------------------------------------


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            fields = stat.rpartition(")")[2].split()
            if len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(root: int) -> set[int]:
    """Every living process below *root* (Linux ``/proc``; empty elsewhere)."""
    children = _children_by_parent()
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_tree(root: int) -> None:
    """SIGKILL *root* and all its descendants: stopped first, so that none forks again or
    is re-parented out of reach while the others die."""
    stopped: set[int] = set()
    seen: set[int] = set()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(root, signal.SIGSTOP)  # nor does it reap a child whose pid is in hand
    for _ in range(50):
        found = descendants(root) - seen
        if not found:
            break
        seen |= found
        for pid in found:
            # Only a process that was stopped is killed below: one that was gone by now
            # (reaped by its parent) left a pid that another process may already have.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
                stopped.add(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root, signal.SIGKILL)  # its own group (start_new_session), in any case
    for pid in (root, *stopped):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


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


# -- logs ---------------------------------------------------------------------------------


class _Line:
    """The current, unfinished line of one stream: at most *cap* bytes of its start are
    kept, and the last bytes seen, to recognise an end marker at its end."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = b""
        self.clipped = False

    def add(self, data: bytes, cap: int) -> None:
        if not self.clipped and len(self.head) + len(data) <= cap:
            self.head += data
            return
        if not self.clipped:
            self.head += data[: max(0, cap - len(self.head))]
            self.clipped = True
        self.tail = (self.tail + data)[-len(_MARKER):]

    def ends_with_marker(self) -> bool:
        return (self.tail if self.clipped else bytes(self.head)).endswith(_MARKER)


class LogCollector:
    """Both streams' lines for the activation in progress, within its log limit."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.limit = DEFAULT_LOG_LIMIT
        self.lines: list[tuple[float, str, str]] = []
        self.size = 0
        self.truncated = False
        self.markers = {"stdout": 0, "stderr": 0}
        self.eof = {"stdout": False, "stderr": False}
        self._current = {"stdout": _Line(), "stderr": _Line()}

    def feed(self, stream: str, data: bytes, when: float) -> None:
        """Bytes read from *stream* (empty at its end)."""
        with self.cond:
            current = self._current[stream]
            if not data:
                if current.head or current.clipped:
                    self._finish(stream, current, when)
                self.eof[stream] = True
                self.cond.notify_all()
                return
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                current.add(data[start:end], self.limit + len(_MARKER))
                self._finish(stream, current, when)
                current = self._current[stream] = _Line()
                start = end + 1
            if start < len(data):
                current.add(data[start:], self.limit + len(_MARKER))

    def _finish(self, stream: str, line: _Line, when: float) -> None:
        head = bytes(line.head)
        if line.ends_with_marker():
            self.markers[stream] += 1
            self.cond.notify_all()
            if not line.clipped:
                head = head[: -len(_MARKER)]
                if not head:
                    return
        if line.clipped:
            self.truncated = True
        text = head.decode("utf-8", errors="replace").rstrip("\r")
        size = len(text.encode("utf-8", errors="replace")) + 1
        if self.size + size > self.limit:
            self.truncated = True
            return
        self.size += size
        self.lines.append((when, stream, text))

    def take(self, expected_markers: int, until_eof: bool, wait_s: float
             ) -> tuple[list[tuple[float, str, str]], bool]:
        """The lines so far, once both streams reached their *expected_markers*-th end
        marker (or their end; with *until_eof*, their end only), waiting at most *wait_s*."""

        def complete() -> bool:
            return all(self.eof[s] or (not until_eof and self.markers[s] >= expected_markers)
                       for s in self.eof)

        with self.cond:
            self.cond.wait_for(complete, timeout=wait_s)
            lines, truncated = self.lines, self.truncated
            self.lines, self.truncated, self.size = [], False, 0
        return lines, truncated


# -- the process ----------------------------------------------------------------------------


@dataclass
class Reply:
    """What came back for one request: *body* None when the deadline passed or the memory
    limit was crossed first."""

    body: bytes | None
    size: int = 0
    exited: bool = False
    out_of_memory: bool = False


class ActionProcess:
    """One action process behind the proxy: *argv* gets ``--reply-fd N`` appended."""

    def __init__(self, argv: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        reply_read, reply_write = os.pipe()
        out_read, self._out_write = os.pipe()
        err_read, self._err_write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [*argv, "--reply-fd", str(reply_write)], stdin=subprocess.PIPE,
                stdout=self._out_write, stderr=self._err_write, pass_fds=(reply_write,),
                cwd=cwd, env=dict(env), start_new_session=True,
            )
        except OSError:
            for fd in (reply_read, out_read, err_read, self._out_write, self._err_write):
                os.close(fd)
            raise
        finally:
            os.close(reply_write)
        self.marks = 0  # end markers written so far, per stream
        self.logs = LogCollector()
        self._replies: queue.Queue[tuple[bytes, int] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._read_replies, args=(reply_read,), daemon=True),
            threading.Thread(target=self._read_logs, args=(out_read, "stdout"), daemon=True),
            threading.Thread(target=self._read_logs, args=(err_read, "stderr"), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_replies(self, fd: int) -> None:
        """Reply lines, each kept up to the result limit (and its full size counted)."""
        kept, size = bytearray(), 0
        with open(fd, "rb", buffering=0) as stream:
            while chunk := stream.read(_CHUNK):
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    part = chunk[start:end]
                    kept += part[: max(0, RESULT_LIMIT + 1 - len(kept))]
                    self._replies.put((bytes(kept), size + len(part)))
                    kept, size, start = bytearray(), 0, end + 1
                rest = chunk[start:]
                kept += rest[: max(0, RESULT_LIMIT + 1 - len(kept))]
                size += len(rest)
        self._replies.put(None)

    def _read_logs(self, fd: int, name: str) -> None:
        with open(fd, "rb", buffering=0) as stream:
            while chunk := stream.read(_CHUNK):
                self.logs.feed(name, chunk, time.time())
        self.logs.feed(name, b"", time.time())

    def over_memory(self, memory_mb: int) -> bool:
        peak = peak_rss_mb(self.proc.pid)
        return peak is not None and peak > memory_mb

    def reply(self, deadline: float, memory_mb: int | None = None) -> Reply:
        """The next reply line (the ack, or a result)."""
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                raw = self._replies.get(
                    timeout=remaining if memory_mb is None else min(remaining, MEMORY_POLL_S))
                break
            except queue.Empty:
                if memory_mb is not None and self.over_memory(memory_mb):
                    return Reply(None, out_of_memory=True)
                if time.monotonic() >= deadline:
                    return Reply(None)
        # A process that went over and replied in between: the cgroup would have killed it.
        if memory_mb is not None and raw is not None and self.over_memory(memory_mb):
            return Reply(None, out_of_memory=True)
        if raw is None:
            return Reply(b"", exited=True)
        return Reply(raw[0], size=raw[1])

    def send(self, request: Mapping[str, Any], log_limit: int) -> bool:
        with self.logs.cond:
            self.logs.limit = log_limit
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except OSError:
            return False
        return True

    def mark_end(self) -> None:
        """The proxy's end markers, after what the action wrote for this request."""
        self.marks += 1
        for fd in (self._out_write, self._err_write):
            with contextlib.suppress(OSError):
                os.write(fd, _MARKER + b"\n")

    def take_logs(self, wait_s: float = 2.0, until_eof: bool = False
                  ) -> tuple[list[tuple[float, str, str]], bool]:
        return self.logs.take(self.marks, until_eof, wait_s)

    def kill(self) -> None:
        """Kill the process and everything it started (a container's removal)."""
        # Never a reaped pid: it may be someone else's by now. An exited but unreaped one is
        # still ours (a zombie keeps its pid), and so is its process group, which holds what
        # it started that is still running: ``alive`` never reaps, for that reason.
        if self.proc.returncode is None:
            kill_tree(self.proc.pid)
        self._close_log_pipes()
        self._reap()

    close = kill  # an idle warm process ends as its container is removed

    def _close_log_pipes(self) -> None:
        for fd in (self._out_write, self._err_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._out_write = self._err_write = -1

    def _reap(self) -> None:
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return
        for thread in self._threads:
            thread.join(timeout=2)

    @property
    def alive(self) -> bool:
        """Whether the process still runs; an exited one is left unreaped for ``kill``."""
        if self.proc.returncode is not None:
            return False
        try:
            exited = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return exited is None
