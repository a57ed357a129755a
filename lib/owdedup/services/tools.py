"""Running the external tools (go, mvn, npm, java, mc) with readable failures."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import string
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from owdedup.runtime.errors import OwdedupError

TAIL_LINES = 30
_ALPHABET = string.ascii_letters + string.digits


class ServiceError(OwdedupError):
    """A local service could not be installed, started, stopped or configured."""

    kind = "service"


def say(message: str) -> None:
    """Progress for the person running ``owdedup services``: on stderr, never secrets."""
    print(message, file=sys.stderr, flush=True)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def tail_file(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a (possibly large) log file, "" if it does not exist."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return tail(data, lines)


def random_token(length: int) -> str:
    """Letters and digits only: safe in a URL, a shell word and every server's config."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generated_credentials(
    path: Path, make: Callable[[], dict[str, str]], *, create: bool, service: str
) -> dict[str, str]:
    """A service's credentials: generated once by *make* into the 0600 JSON file *path*
    (created exclusively, so two concurrent first starts agree), read back afterwards."""
    if not path.exists():
        if not create:
            raise ServiceError(
                f"no {service} credentials in {path}: run `owdedup services up` first"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(make(), handle)
    data = json.loads(path.read_text())
    return {str(key): str(value) for key, value in data.items()}


def require(tool: str, purpose: str) -> str:
    """The path of ``tool`` on PATH, or a ServiceError saying what it is needed for."""
    found = shutil.which(tool)
    if not found:
        raise ServiceError(f"`{tool}` is not on PATH; it is needed to {purpose}")
    return found


def run_tool(
    tool: str,
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    timeout: float | None = None,
    error: type[OwdedupError] = ServiceError,
) -> str:
    """Run ``argv`` and return its combined output; on failure raise ``error`` (a
    ServiceError unless the caller names its own, as the deploy build does) that names
    ``tool`` and shows the tail of the output. With ``log`` the output is also kept there
    (the full text, for long builds)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    command = [str(part) for part in argv]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise error(f"{tool}: `{command[0]}` not found") from None
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else ""
        raise error(
            f"{tool} timed out after {timeout:.0f}s: {' '.join(command[:3])} ...\n{tail(out)}"
        ) from None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(done.stdout)
    if done.returncode != 0:
        where = f" (full output: {log})" if log is not None else ""
        raise error(
            f"{tool} failed with exit code {done.returncode}{where}:\n{tail(done.stdout)}"
        )
    return done.stdout
