"""An action's code laid out as the runtime's ``compile`` step leaves it: the one unpacker.

- A zip is extracted as it is (``extractall`` drops absolute and ``..`` parts); plain source
  becomes the folder's only file.
- Python: ``exec`` or ``__main__.py`` becomes ``main__.py`` and the launcher
  (:mod:`owdedup.actionloop.launcher`) is copied beside it as ``exec__.py``; a folder without
  ``main__.py`` is the runtime's compile failure.
- Node.js: the folder keeps its files; :mod:`owdedup.actionloop.node` finds the entry.

:class:`CodeCache` keeps one unpacked folder per code file and kind, created atomically, for
``owdedup serve``; the zip tests and the benchmarks call :func:`unpack` directly.
"""

from __future__ import annotations

import os
import shutil
import threading
import zipfile
from pathlib import Path

from owdedup.actionloop.launcher import LAUNCHER_NAME, MAIN_MODULE

LAUNCHER = Path(__file__).with_name("launcher.py")


class CodeError(Exception):
    """The code cannot be laid out: the runtime's compile step fails on it."""


def _extract(function: Path, target: Path, source_name: str) -> None:
    if function.suffix == ".zip" or zipfile.is_zipfile(function):
        with zipfile.ZipFile(function) as archive:
            archive.extractall(target)
    else:
        target.mkdir(parents=True)
        shutil.copyfile(function, target / source_name)


def unpack(function: Path, target: Path, kind: str = "python") -> Path:
    """*function* (a zip or a source file) unpacked into *target* (which must not exist),
    laid out for *kind*'s family ("python" or "nodejs"); raises :class:`CodeError`."""
    family = kind.partition(":")[0]
    try:
        _extract(function, target, "__main__.py" if family == "python" else "index.js")
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CodeError(f"cannot unpack the action's code: {exc}") from exc
    if family != "python":
        return target
    for name in ("exec", "__main__.py"):  # compile's order: exec, then __main__.py
        if (target / name).is_file():
            (target / name).replace(target / f"{MAIN_MODULE}.py")
    if not (target / f"{MAIN_MODULE}.py").is_file():
        raise CodeError("Zip file does not include __main__.py")
    shutil.copyfile(LAUNCHER, target / LAUNCHER_NAME)
    return target


class CodeCache:
    """Unpacked action code under *root*, one folder per code file and runtime family.

    The files are the catalog's code store's, named by their content's digest
    (``<sha256>.zip`` or ``<sha256>.py``), so a file's stem names its version."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def prepare(self, function: Path, kind: str = "python") -> Path:
        if not function.is_file():
            raise CodeError(f"the action's code is missing: {function}")
        family = kind.partition(":")[0]
        target = self.root / f"{function.stem}-{family}"
        if target.is_dir():
            return target
        temp = self.root / f".{target.name}.{os.getpid()}.{threading.get_ident()}"
        shutil.rmtree(temp, ignore_errors=True)
        try:
            unpack(function, temp, family)
            temp.rename(target)
        except CodeError:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        except OSError as exc:  # another thread unpacked the same code first?
            shutil.rmtree(temp, ignore_errors=True)
            if not target.is_dir():
                raise CodeError(f"cannot unpack the action's code: {exc}") from exc
        return target

    def discard(self, stem: str) -> None:
        """Remove the unpacked folders of the code file named *stem* (every kind)."""
        for folder in self.root.glob(f"{stem}-*"):
            shutil.rmtree(folder, ignore_errors=True)
