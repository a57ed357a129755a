"""The zip's ``virtualenv/``: the third-party packages installed for the runtime, trimmed.

pip installs an action's pinned packages (:mod:`owdedup.deploy.needs`) as wheels for Linux
x86-64 CPython 3.11, the runtime's platform rather than this machine's, into
``virtualenv/lib/python3.11/site-packages``; ``virtualenv/bin/activate_this.py`` is rendered
from pypa virtualenv's template, taken from the wheel of the virtualenv the runtime ships.

Installed packages are cached per pin set under ``OWDEDUP_DEPLOY_CACHE`` (default
``~/.cache/owdedup/deploy``), so a rebuild never runs pip.

The installed files are then cut by :data:`~owdedup.deploy.runtime.PACKAGE_TRIMS`
(:func:`apply_trims`): a trim whose text is missing fails the build, and no shipped file may
import a distribution a trim left out (:func:`check_trimmed_imports`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from owdedup.deploy.needs import Pin
from owdedup.deploy.runtime import (
    ACTIVATE_THIS,
    PACKAGE_TRIMS,
    RUNTIME_KIND,
    RUNTIME_PLATFORMS,
    RUNTIME_PYTHON,
    SITE_PACKAGES,
    BuildError,
    Log,
    Trim,
    _stderr,
)
from owdedup.services.tools import run_tool

#: Where virtualenv keeps the template of ``activate_this.py`` inside its wheel.
ACTIVATE_TEMPLATE: Final = "virtualenv/activation/python/activate_this.py"
_PLACEHOLDER = re.compile(r"__[A-Z][A-Z_]*__")

#: Bumped when the layout of a cached site-packages folder changes.
_CACHE_SCHEMA = 1


def _run(argv: Sequence[str], what: str) -> None:
    """Run pip; on failure a BuildError naming *what* with the tail of its output."""
    run_tool(what, argv, error=BuildError)


def _pip() -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def site_packages_key(packages: Sequence[Pin]) -> str:
    """Names the cached install of *packages* for the runtime's platform."""
    stamp = json.dumps({
        "schema": _CACHE_SCHEMA,
        "python": RUNTIME_PYTHON,
        "platforms": list(RUNTIME_PLATFORMS),
        "packages": [str(pin) for pin in sorted(packages)],
    }, sort_keys=True)
    return hashlib.sha256(stamp.encode()).hexdigest()[:20]


def install_site_packages(packages: Sequence[Pin], cache_dir: Path, log: Log = _stderr) -> Path:
    """A folder holding exactly *packages* installed for the runtime (cached per pin set)."""
    target = cache_dir / "site" / site_packages_key(packages)
    marker = target / ".owdedup-complete"
    if marker.is_file():
        return target
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if packages:
        log(f"pip: installing {', '.join(map(str, packages))} for {RUNTIME_KIND} ...")
        platform_flags = [flag for tag in RUNTIME_PLATFORMS for flag in ("--platform", tag)]
        _run([
            *_pip(), "install", "--quiet", "--target", str(staging), "--no-deps",
            "--no-compile", "--no-warn-script-location", "--only-binary=:all:",
            "--implementation", "cp", "--python-version", RUNTIME_PYTHON, *platform_flags,
            *(str(pin) for pin in packages),
        ], f"pip install {' '.join(map(str, packages))}")
    (staging / ".owdedup-complete").write_text("\n".join(map(str, packages)) + "\n")
    shutil.rmtree(target, ignore_errors=True)  # an unfinished earlier attempt
    try:
        staging.rename(target)
    except OSError:
        if not marker.is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # a concurrent build got there first
    return target


def virtualenv_wheel(version: str, cache_dir: Path, log: Log = _stderr) -> Path:
    """pypa virtualenv's wheel (for its ``activate_this.py`` template), downloaded once."""
    wheels = cache_dir / "wheels"
    pattern = f"virtualenv-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        log(f"pip: downloading virtualenv {version} (for its activate_this.py template) ...")
        wheels.mkdir(parents=True, exist_ok=True)
        _run([*_pip(), "download", "--quiet", "--no-deps", "--only-binary=:all:",
              "--dest", str(wheels), f"virtualenv=={version}"], "pip download virtualenv")
        found = sorted(wheels.glob(pattern))
        if not found:
            raise BuildError(f"pip download virtualenv=={version} left no wheel in {wheels}")
    return found[0]


def render_activate_this(template: str) -> str:
    """``bin/activate_this.py`` as virtualenv's PythonActivator writes it for a virtualenv
    whose site-packages is ``lib/python3.11/site-packages`` (nothing machine-specific)."""
    if "__VIRTUAL_ENV__" in template:
        raise BuildError("this virtualenv's activate_this.py template embeds the virtualenv's "
                         "absolute path; render it for the runtime's path instead")
    replacements = {
        "__VIRTUAL_PROMPT__": "",
        "__VIRTUAL_NAME__": "virtualenv",
        "__BIN_NAME__": "bin",
        "__PATH_SEP__": ":",
        "__LIB_FOLDERS__": f"../lib/python{RUNTIME_PYTHON}/site-packages",
        "__DECODE_PATH__": "",
    }
    text = template
    for key, value in replacements.items():
        text = text.replace(key, value)
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise BuildError(f"activate_this.py template has unknown placeholders: {left}")
    compile(text, ACTIVATE_THIS, "exec")
    return text


def activate_this(version: str, cache_dir: Path, log: Log = _stderr) -> bytes:
    wheel = virtualenv_wheel(version, cache_dir, log)
    try:
        with zipfile.ZipFile(wheel) as archive:
            template = archive.read(ACTIVATE_TEMPLATE).decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise BuildError(f"no {ACTIVATE_TEMPLATE} in {wheel}: {exc}") from exc
    return render_activate_this(template).encode("utf-8")


def _skipped(relative: Path) -> bool:
    return "__pycache__" in relative.parts or relative.suffix == ".pyc"


def _site_files(site: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(site.rglob("*")):
        relative = path.relative_to(site)
        if relative.parts[0] in ("bin", ".owdedup-complete") or _skipped(relative):
            continue  # console scripts (with this machine's shebang) and our marker
        if path.is_symlink():
            raise BuildError(f"{path}: symlinks cannot be shipped (the runtime drops them)")
        if path.is_file():
            yield f"{SITE_PACKAGES}/{relative.as_posix()}", path.read_bytes()


def apply_trims(files: dict[str, bytes], packages: Iterable[Pin],
                trims: Mapping[str, Trim] = PACKAGE_TRIMS) -> None:
    """Apply the trims of the shipped *packages* to *files* (archive name -> content)."""
    for pin in packages:
        trim = trims.get(pin.name)
        if trim is None:
            continue
        where = f"PACKAGE_TRIMS[{pin.name!r}] does not fit {pin}"
        for relative in trim.remove:
            if files.pop(f"{SITE_PACKAGES}/{relative}", None) is None:
                raise BuildError(f"{where}: it has no {relative} to leave out")
        for relative, old, new in trim.edits:
            name = f"{SITE_PACKAGES}/{relative}"
            text = files[name].decode("utf-8") if name in files else ""
            if text.count(old) != 1:
                raise BuildError(f"{where}: {relative} does not hold {old.strip()!r} exactly "
                                 "once; review the trim for this version")
            files[name] = text.replace(old, new).encode("utf-8")


def top_level_modules(distribution: str) -> set[str]:
    """The importable top-level names of an installed distribution (``Crypto``,
    ``_cffi_backend``), from its file list."""
    try:
        found = importlib.metadata.distribution(distribution).files or ()
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(f"{distribution} is not installed here") from None
    names: set[str] = set()
    for path in found:
        top = path.parts[0]
        if len(path.parts) == 1:
            if top.endswith((".py", ".so")):
                names.add(top.split(".", 1)[0])
        elif not top.endswith((".dist-info", ".libs", ".data")) and top != "__pycache__":
            names.add(top)
    return names


def _absolute_imports(source: bytes, name: str) -> Iterator[tuple[int, str]]:
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as exc:
        raise BuildError(f"cannot parse {name}: {exc}") from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.lineno, node.module


def check_trimmed_imports(files: Mapping[str, bytes], trimmed: Iterable[str]) -> None:
    """No shipped ``.py`` imports a module of the *trimmed* distributions (anywhere, lazily
    or not): a trim must not leave code that fails at run time."""
    banned = {module: dist for dist in trimmed for module in top_level_modules(dist)}
    if not banned:
        return
    found = [
        f"{name}:{line} imports {module} ({banned[module.split('.')[0]]})"
        for name, content in files.items() if name.endswith(".py")
        for line, module in _absolute_imports(content, name)
        if module.split(".")[0] in banned
    ]
    if found:
        raise BuildError("shipped code imports what PACKAGE_TRIMS left out:\n  "
                         + "\n  ".join(found))
