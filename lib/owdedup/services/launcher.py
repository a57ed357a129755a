"""Process bookkeeping for the local services: pid files, liveness, ports and log files.

Each service runs in its own session with a pid file and a log file in ``<state>/run/``;
:func:`launch` starts one in the background (unless it already runs) and waits until it is
ready, :func:`stop` ends it and waits until its ports are free. The per-service modules
(:mod:`~owdedup.services.couchdb`, :mod:`~owdedup.services.kafka`,
:mod:`~owdedup.services.minio`) pass their command line and ready check to :func:`launch`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from owdedup.services.config import ServicesConfig
from owdedup.services.tools import ServiceError, say, tail_file

STOP_TIMEOUT = 45.0
#: How long a start waits for a port that a just-stopped process may still hold.
PORT_FREE_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProcessSpec:
    """How the launcher knows one service's process, registered by the service's module
    (:func:`register_process`): a token of its command line (a reused pid is not taken for
    it), the TCP ports it listens on, how long it may take to become ready."""

    marker: str
    ports: Callable[[ServicesConfig], tuple[int, ...]]
    start_timeout_s: float = 60.0


_PROCESSES: dict[str, ProcessSpec] = {}


def register_process(name: str, spec: ProcessSpec) -> None:
    _PROCESSES[name] = spec


def _spec(name: str) -> ProcessSpec:
    try:
        return _PROCESSES[name]
    except KeyError:
        raise ServiceError(f"no process is registered for service {name!r}") from None


def service_ports(config: ServicesConfig, name: str) -> tuple[int, ...]:
    """The TCP ports service ``name`` listens on."""
    return _spec(name).ports(config)


def _proc_exists(pid: int) -> bool:
    """Whether ``pid`` still exists and is not a zombie, whatever its command line.

    A process that is exiting has already released its memory (its command line reads
    empty) while it still holds its files and sockets, so a stop must wait on this,
    not on :func:`_proc_alive`, before its ports are free."""
    stat = Path(f"/proc/{pid}/stat")
    if not Path("/proc/self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = stat.read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        _reap(pid)
        return False
    return True


def _wait_ports_closed(host: str, ports: Iterable[int], timeout: float) -> list[int]:
    """Wait until nothing listens on ``ports``; returns those still open at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        busy = [port for port in ports if _port_open(host, port)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.2)


def _proc_alive(pid: int, marker: str, *, starting: bool = False) -> bool:
    """Whether ``pid`` is a live (non-zombie) process whose command line holds ``marker``
    (guards against a reused pid). ``starting``: just launched by us, so an empty command
    line (it reads so for a moment while exec loads a large binary) counts as alive."""
    if not _proc_exists(pid):
        return False
    if not Path("/proc/self").exists():
        return True  # no procfs: existence is all that can be checked
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    cmdline = raw.replace(b"\0", b" ").decode("utf-8", "replace")
    return marker in cmdline or (starting and not cmdline.strip())


#: Services started by this Python process, so that it collects them when they exit.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    """Collect an exited child of this process (tests start services in-process)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def read_pid(config: ServicesConfig, name: str) -> int | None:
    """The pid of the running service ``name``, or None (a stale pid file is removed)."""
    path = config.pid_file(name)
    try:
        pid = int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if _proc_alive(pid, _spec(name).marker):
        return pid
    path.unlink(missing_ok=True)
    return None


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            # A connect to a free port in the ephemeral range can, rarely, pick that very
            # port as its source and connect to itself; nothing listens then.
            return bool(sock.getsockname() != sock.getpeername())
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def launch(
    config: ServicesConfig,
    name: str,
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str],
    cwd: Path,
    ports: Iterable[int],
    ready: Callable[[], bool],
) -> int:
    """Start ``argv`` in the background unless already running; wait until ``ready()``."""
    pid = read_pid(config, name)
    if pid is None:
        busy = _wait_ports_closed(config.host, ports, PORT_FREE_TIMEOUT)
        if busy:
            raise ServiceError(
                f"{name}: port {', '.join(map(str, busy))} on {config.host} is already in use "
                "by another process (set the OWDEDUP_*_PORT variables to use others)"
            )
        config.run_dir.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        log = config.log_file(name)
        with log.open("ab") as out:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"\n=== owdedup services: start {name} {stamp} ===\n".encode())
            out.flush()
            process = subprocess.Popen(
                [str(part) for part in argv],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        pid = process.pid
        _CHILDREN[pid] = process
        config.pid_file(name).write_text(f"{pid}\n")
        say(f"{name}: started (pid {pid}, log {log})")
    else:
        process = None
        say(f"{name}: already running (pid {pid})")
    deadline = time.monotonic() + _spec(name).start_timeout_s
    while True:
        if ready():
            say(f"{name}: ready")
            return pid
        alive = _proc_alive(pid, _spec(name).marker, starting=process is not None)
        exited = process.poll() if process is not None else None
        if exited is not None or not alive:
            config.pid_file(name).unlink(missing_ok=True)
            code = f" with exit code {exited}" if exited is not None else ""
            raise ServiceError(
                f"{name} exited{code} while starting; last lines of "
                f"{config.log_file(name)}:\n{tail_file(config.log_file(name))}"
            )
        if time.monotonic() > deadline:
            stop(config, name, quiet=True)
            raise ServiceError(
                f"{name} was not ready after {_spec(name).start_timeout_s:.0f}s (stopped it); "
                f"last lines of {config.log_file(name)}:\n{tail_file(config.log_file(name))}"
            )
        time.sleep(0.3)


def stop(config: ServicesConfig, name: str, *, quiet: bool = False) -> bool:
    """Stop service ``name`` (SIGTERM to its process group, SIGKILL after a grace period).
    Returns False when it was not running."""
    pid = read_pid(config, name)
    if pid is None:
        config.pid_file(name).unlink(missing_ok=True)
        if not quiet:
            say(f"{name}: not running")
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    # The pid was checked to be this service's above; from here on only its existence
    # matters (see _proc_exists), so a pid reused in these few seconds is the only risk.
    while _proc_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _proc_exists(pid):
        say(f"{name}: still running after {STOP_TIMEOUT:.0f}s, killing pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10.0
        while _proc_exists(pid) and time.monotonic() < kill_deadline:
            time.sleep(0.1)
    config.pid_file(name).unlink(missing_ok=True)
    busy = _wait_ports_closed(config.host, service_ports(config, name), PORT_FREE_TIMEOUT)
    if busy and not quiet:
        say(f"{name}: warning: port {', '.join(map(str, busy))} still answers after the stop")
    if not quiet:
        say(f"{name}: stopped")
    return True


def logs(config: ServicesConfig, name: str, lines: int = 50) -> str:
    """The last ``lines`` lines of service ``name``'s log file (a known name: see
    :func:`owdedup.services.processes.logs`)."""
    return tail_file(config.log_file(name), lines)
