"""The python:3.11 image's preinstalled packages, for actions run outside OpenWhisk.

An action zip ships only what the runtime lacks (:data:`owdedup.deploy.runtime.
RUNTIME_PACKAGES` decides both), so running one locally needs the rest: requests,
python-dateutil, certifi, ... at the image's versions. :func:`prepare_runtime_site` installs
them once with pip (wheels only, into a folder of their own, byte-compiled as the image has
them) and keeps them under ``~/.cache/owdedup/runtime-site/<key>`` (``$XDG_CACHE_HOME``, or
``OWDEDUP_RUNTIME_SITE_HOME``), keyed by the pins and the interpreter; ``owdedup serve`` uses
it unless ``--runtime-site`` names another folder. Creation is atomic (a temporary folder
renamed into place), so concurrent first starts do not see half an install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from owdedup.deploy.runtime import RUNTIME_PACKAGES
from owdedup.services.config import cache_home

ENV_HOME = "OWDEDUP_RUNTIME_SITE_HOME"
#: Image packages left out here, with the reason: a local stand-in cannot build them.
LEFT_OUT: Mapping[str, str] = {
    "netifaces": "no wheel for CPython 3.11 (the image compiles it with gcc)",
}
COMPLETE = ".owdedup-runtime-site"


class RuntimeSiteError(Exception):
    """The runtime's packages could not be installed."""


def runtime_site_pins() -> list[str]:
    """``name==version`` of every pinned image package this stand-in installs."""
    return [f"{name}=={version}" for name, version in sorted(RUNTIME_PACKAGES.items())
            if version is not None and name not in LEFT_OUT]


def runtime_site_home(environ: Mapping[str, str] | None = None) -> Path:
    return cache_home("runtime-site", ENV_HOME, environ)


def prepare_runtime_site(home: Path | None = None, *, python: str | None = None,
                         log: Callable[[str], None] = lambda _line: None) -> Path:
    """The folder of the image's packages for *python* (the base interpreter by default),
    installed on first use; raises :class:`RuntimeSiteError` when pip fails."""
    interpreter = python or str(getattr(sys, "_base_executable", "") or sys.executable)
    pins = runtime_site_pins()
    key = hashlib.sha256("\n".join([*pins, f"python{sys.version_info[0]}."
                                           f"{sys.version_info[1]}"]).encode()).hexdigest()
    root = home or runtime_site_home()
    target = root / key[:16]
    if (target / COMPLETE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    temp = root / f".{key[:16]}.{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    log(f"installing the python:3.11 runtime's packages into {target} (once) ...")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-compile", "--only-binary", ":all:", "--no-warn-conflicts",
         "--target", str(temp), *pins],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(temp, ignore_errors=True)
        raise RuntimeSiteError(f"pip could not install the runtime's packages "
                               f"({' '.join(pins)}):\n{(done.stdout + done.stderr)[-3000:]}")
    # The image's pip byte-compiled them at install; so do we, with the actions' interpreter.
    subprocess.run([interpreter, "-S", "-m", "compileall", "-q", str(temp)],
                   capture_output=True, stdin=subprocess.DEVNULL, check=False)
    (temp / COMPLETE).write_text("\n".join(pins) + "\n")
    try:
        temp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(temp, ignore_errors=True)
        if not (target / COMPLETE).is_file():
            raise
    return target
