"""The one way this project replaces a file: write a private temporary file, then rename it.

A reader sees the old content or the new one, never a partial file. The temporary file is
created beside the target with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a random name, so a
name planted in advance (a symlink to a file elsewhere, say) is never written through: at
worst the write fails. Its mode is given at creation (``0o600`` unless asked otherwise,
before the umask), so a secret is never readable by others, not even for a moment.

Used by the folder object store, ``owdedup serve``'s state files and the deploy zips;
:func:`private_dir` is its counterpart for folders that hold secrets.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: Marks this module's temporary files (``.<name>.owdedup-tmp-<random>``): stores skip
#: them when listing and refuse keys that contain the mark.
TEMP_MARK = ".owdedup-tmp-"
_ATTEMPTS = 5
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Writer = Callable[[BinaryIO], None]


def temp_name(name: str) -> str:
    """A fresh, unpredictable temporary name for a file that will become *name*."""
    return f".{name}{TEMP_MARK}{secrets.token_hex(8)}"


def write_atomic(
    target: Path | str,
    content: bytes | Writer,
    *,
    mode: int = 0o600,
    dir_fd: int | None = None,
) -> os.stat_result:
    """Replace *target* with *content* (bytes, or a function that writes to the open file).

    With *dir_fd*, *target* is a bare name inside that open folder (the caller has already
    walked to it without following links). Returns the new file's status, taken after the
    rename from the file itself, so it describes this content even if another writer
    replaces the name right after. On any failure the temporary file is removed and the
    target is untouched.
    """
    target = Path(target)
    if dir_fd is not None and target.name != str(target):
        raise ValueError(f"with dir_fd, {target} must be a bare file name")
    fd, temp = _create_temp(target, mode, dir_fd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as handle:
            if isinstance(content, bytes):
                handle.write(content)
            else:
                content(handle)
        # Renamed by name, then described from the descriptor: same inode, final ctime.
        os.replace(temp, target.name if dir_fd is not None else target,
                   src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return os.fstat(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    """Make *path* (and missing parents) and keep it to this user (0700), even if it
    existed: it holds credentials or data that are nobody else's to read."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _create_temp(target: Path, mode: int, dir_fd: int | None) -> tuple[int, str]:
    for _attempt in range(_ATTEMPTS):
        name = temp_name(target.name)
        temp = name if dir_fd is not None else str(target.with_name(name))
        try:
            return os.open(temp, _FLAGS, mode, dir_fd=dir_fd), temp
        except FileExistsError:
            continue  # 64 random bits taken: something is planting names here; try others
    raise FileExistsError(f"could not create a temporary file beside {target}")
