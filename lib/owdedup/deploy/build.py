"""Build the action zips that ``manifest.yaml`` deploys, reproducibly: plan, then execute.

Every action whose ``function`` is ``build/actions/NAME.zip`` gets a zip built from
``actions/NAME.py``, laid out as the OpenWhisk Python runtime (``python:3.11``) expects::

    __main__.py                                   the action file (it holds ``main``)
    owdedup/...                                   the runtime modules the action imports,
                                                  plus every function module whose source
                                                  is part of a function identity
    owdedup/_pins.json                            library versions of those identities
    .../__pycache__/NAME.cpython-311.pyc          bytecode of every shipped .py but
                                                  __main__.py, hash-based (see below)
    virtualenv/bin/activate_this.py               rendered from pypa virtualenv's template
    virtualenv/lib/python3.11/site-packages/...   the third-party packages the action needs
                                                  and the runtime does not already ship,
                                                  as wheels for Linux x86-64 CPython 3.11

:func:`plan_build` works out what would be built (sources, modules, pinned packages) without
building anything; :func:`execute_plan` builds it; :func:`build_actions` does both. The same
inputs give the same bytes: entries are sorted, timestamps fixed at 1980-01-01, permissions
fixed, fixed compression, and the bytecode hash-based.

Two things make a cold start cheaper than shipping the packages as pip installs them:

* :data:`PACKAGE_TRIMS`: explicit, checked cuts to a shipped distribution (minio's
  ``__init__`` imports its admin client, which pulls in pycryptodome, argon2-cffi and cffi;
  owdedup never uses it). A trim whose text is missing fails the build, and no shipped file
  may import a distribution a trim left out.
* Bytecode: OpenWhisk unpacks the zip into a fresh folder for every new container and the
  runtime compiles nothing, so without ``.pyc`` files each cold start compiles every module it
  imports. The zips carry ``__pycache__/*.cpython-311.pyc`` compiled by this (CPython 3.11)
  interpreter in a clean subprocess, checked-hash based (:data:`PYC_INVALIDATION`): unzipping
  does not keep timestamps, so timestamp-based ones would be recompiled.

Installed packages are cached per pin set under ``OWDEDUP_DEPLOY_CACHE`` (default
``~/.cache/owdedup/deploy``), so a rebuild never runs pip.

Run ``python -m owdedup.deploy.build --dry-run`` to see the plan.
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import importlib.metadata
import io
import json
import os
import py_compile
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import owdedup
from owdedup.errors import OwdedupError
from owdedup.functions import FUNCTIONS

# The target: what the OpenWhisk python:3.11 runtime is ------------------------------------

#: The only runtime kind these zips are built for (its virtualenv is CPython 3.11 only).
RUNTIME_KIND: Final = "python:3.11"
RUNTIME_PYTHON: Final = "3.11"
#: The runtime image is python:3.11-bookworm (glibc 2.36): wheels tagged manylinux2014 up to
#: manylinux_2_36 load there. Newest first, the order pip prefers them in.
RUNTIME_PLATFORMS: Final[tuple[str, ...]] = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
)
#: Environment markers of the runtime, for the requirements of the packages we ship.
RUNTIME_MARKERS: Final[Mapping[str, str]] = MappingProxyType({
    "implementation_name": "cpython",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": f"{RUNTIME_PYTHON}.0",
    "python_version": RUNTIME_PYTHON,
    "sys_platform": "linux",
})

#: Distributions the runtime image already has (apache/openwhisk-runtime-python,
#: core/python311Action/requirements.txt, plus pip, six and wheel from its Dockerfile, plus
#: requests' own dependencies), name -> version; None where the version is whatever pip
#: chose when the image was built. The zips never ship these.
RUNTIME_PACKAGES: Final[Mapping[str, str | None]] = MappingProxyType({
    "beautifulsoup4": "4.11.2",
    "httplib2": "0.21.0",
    "kafka-python": "2.0.2",
    "lxml": "4.9.2",
    "netifaces": "0.11.0",
    "python-dateutil": "2.8.2",
    "requests": "2.31.0",
    "scrapy": "2.11.2",
    "setuptools": "67.4.0",
    "simplejson": "3.18.3",
    "twisted": "24.7.0",
    "virtualenv": "20.19.0",
    "pip": None,
    "six": None,
    "wheel": None,
    # requests' dependencies
    "certifi": None,
    "charset-normalizer": None,
    "idna": None,
    "urllib3": None,
})

#: The distributions each action needs beyond the runtime, their dependencies found from the
#: installed metadata. One place: an action that is not listed here cannot be built.
ACTION_REQUIREMENTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "hash": ("minio",),
    "lookup": ("minio", "ibmcloudant"),
    "thumbnail": ("minio", "pillow"),
    "record": ("minio", "ibmcloudant"),
    "dispatch": (),
})

#: Modules that are CLI or tooling, never part of an action: reaching one from an action's
#: imports is a build error.
TOOLING_MODULES: Final[tuple[str, ...]] = (
    "owdedup.__main__",
    "owdedup.bundle",
    "owdedup.cli",
    "owdedup.deploy",
    "owdedup.engine",
    "owdedup.mapper",
    "owdedup.serve",
    "owdedup.services",
    "owdedup.watch",
    "owdedup.workers",
)

#: The source of these modules is hashed into function identities (``identity.code_digest``)
#: even by actions that never import them, so every zip carries them.
IDENTITY_MODULES: Final[tuple[str, ...]] = tuple(sorted({f.module for f in FUNCTIONS.values()}))
#: The libraries whose versions are part of function identities, written to ``_pins.json``.
IDENTITY_LIBRARIES: Final[tuple[str, ...]] = tuple(
    sorted({canonicalize_name(lib) for f in FUNCTIONS.values() for lib in f.libraries})
)


@dataclass(frozen=True)
class Trim:
    """A build-time cut to one shipped distribution: code of it that owdedup never runs and
    that costs cold-start time (and zip bytes) through what it imports.

    *drop_requirements* of the distribution are not installed (nor whatever only they pull
    in); *edits* are ``(file, exact text, replacement)`` in its files (relative to
    site-packages), each text required to occur exactly once, so an upgrade that moves it
    fails the build; *remove* are files left out (that import what was dropped).
    """

    reason: str
    drop_requirements: tuple[str, ...] = ()
    edits: tuple[tuple[str, str, str], ...] = ()
    remove: tuple[str, ...] = ()


#: Every trim, by the distribution it cuts. One place: nothing else in the build edits a
#: third-party package.
PACKAGE_TRIMS: Final[Mapping[str, Trim]] = MappingProxyType({
    "minio": Trim(
        reason="minio/__init__.py imports MinioAdmin (minio.minioadmin -> minio.crypto -> "
               "pycryptodome, argon2-cffi -> cffi -> pycparser); owdedup.stores.s3 uses the "
               "S3 client only (minio.Minio, .error, .commonconfig, .helpers); measured: "
               "import minio 113 -> 75 ms, 3.2 MiB less per zip",
        drop_requirements=("argon2-cffi", "pycryptodome"),
        edits=(("minio/__init__.py",
                "from .minioadmin import MinioAdmin as MinioAdmin\n",
                "# owdedup: MinioAdmin left out (owdedup.deploy.build.PACKAGE_TRIMS)\n"),),
        remove=("minio/minioadmin.py", "minio/crypto.py"),
    ),
})

#: The bytecode shipped: checked against a hash of the source (not its timestamp, which the
#: unpacked zip does not keep). Checking costs a read and a SipHash of each source file per
#: import; unchecked would skip that but run stale bytecode if a source were ever edited.
PYC_INVALIDATION: Final = py_compile.PycInvalidationMode.CHECKED_HASH
PYC_TAG: Final = "cpython-311"

#: OpenWhisk's limit on an action's code. The create request carries the zip base64-encoded
#: (4/3 larger), and a standalone controller refuses requests over 50 MiB: see size_report.
MAX_ZIP_BYTES: Final = 48 * 1024 * 1024
REQUEST_LIMIT_BYTES: Final = 50 * 1024 * 1024

PACKAGE: Final = "owdedup"
PINS_FILE: Final = f"{PACKAGE}/_pins.json"
ACTIVATE_THIS: Final = "virtualenv/bin/activate_this.py"
SITE_PACKAGES: Final = f"virtualenv/lib/python{RUNTIME_PYTHON}/site-packages"
#: Where virtualenv keeps the template of ``activate_this.py`` inside its wheel.
ACTIVATE_TEMPLATE: Final = "virtualenv/activation/python/activate_this.py"

ZIP_DATE: Final = (1980, 1, 1, 0, 0, 0)
ZIP_LEVEL: Final = 6
_FUNCTION_PATH = re.compile(r"(?:\./)?build/actions/(?P<name>[A-Za-z0-9_-]+)\.zip")
_BACKEND_TARGET = re.compile(rf"({PACKAGE}(?:\.\w+)+):\w+")
_PLACEHOLDER = re.compile(r"__[A-Z][A-Z_]*__")

#: Bumped when the layout of a cached site-packages folder changes.
_CACHE_SCHEMA = 1
ENV_CACHE = "OWDEDUP_DEPLOY_CACHE"

Log = Callable[[str], None]


class BuildError(OwdedupError):
    """An action zip cannot be planned or built."""

    kind = "build"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# The plan ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Pin:
    """One distribution at one version, as pip names it (``name==version``)."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class ActionPlan:
    name: str
    source: Path
    zip_path: Path
    #: Files under ``owdedup/`` (relative to the package's parent folder), sorted.
    modules: tuple[str, ...]
    #: ACTION_REQUIREMENTS[name]: what the action needs directly.
    requires: tuple[str, ...]
    #: Everything installed into the zip's virtualenv (requirements and their dependencies).
    packages: tuple[Pin, ...]
    #: Dependencies left to the runtime because it ships them.
    from_runtime: tuple[str, ...]
    #: Runtime packages too old for a requirement: the zip ships its own copy of them.
    conflicts: tuple[str, ...]
    #: Distributions PACKAGE_TRIMS left out (the untrimmed packages would include them).
    trimmed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": str(self.source),
            "zip": str(self.zip_path),
            "modules": list(self.modules),
            "requires": list(self.requires),
            "packages": [str(pin) for pin in self.packages],
            "from_runtime": list(self.from_runtime),
            "conflicts": list(self.conflicts),
            "trimmed": list(self.trimmed),
        }


@dataclass(frozen=True)
class BuildPlan:
    manifest: Path
    out_dir: Path
    cache_dir: Path
    package_dir: Path
    #: The content of ``owdedup/_pins.json`` in every zip.
    pins: Mapping[str, str]
    virtualenv_version: str
    actions: tuple[ActionPlan, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "out_dir": str(self.out_dir),
            "cache_dir": str(self.cache_dir),
            "runtime": RUNTIME_KIND,
            "platforms": list(RUNTIME_PLATFORMS),
            "pins": dict(self.pins),
            "virtualenv": self.virtualenv_version,
            "actions": [action.to_dict() for action in self.actions],
        }


@dataclass(frozen=True)
class BuiltZip:
    name: str
    path: Path
    bytes: int
    sha256: str
    packages: tuple[str, ...]


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(ENV_CACHE):
        return Path(env[ENV_CACHE]).expanduser()
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "owdedup" / "deploy"


def manifest_actions(manifest_path: Path) -> list[tuple[str, str, str | None]]:
    """(action name, zip stem, runtime) of every action whose function is a built zip."""
    try:
        data = yaml.safe_load(manifest_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BuildError(f"cannot read {manifest_path}: {exc}") from exc
    found: list[tuple[str, str, str | None]] = []
    packages = (data or {}).get("packages") or {}
    for package in packages.values():
        for name, action in ((package or {}).get("actions") or {}).items():
            match = _FUNCTION_PATH.fullmatch(str((action or {}).get("function") or ""))
            if match:
                runtime = action.get("runtime")
                found.append((str(name), match["name"], None if runtime is None else str(runtime)))
    return found


def plan_build(
    manifest_path: Path | str,
    out_dir: Path | str | None = None,
    *,
    cache_dir: Path | str | None = None,
    only: Iterable[str] | None = None,
) -> BuildPlan:
    """What :func:`execute_plan` would build for *manifest_path*; nothing is built or fetched.

    *out_dir* defaults to ``build/actions`` beside the manifest (where its ``function:``
    paths point); *only* limits the plan to the named actions.
    """
    manifest = Path(manifest_path).resolve()
    project = manifest.parent
    out = Path(out_dir).resolve() if out_dir is not None else project / "build" / "actions"
    cache = Path(cache_dir).resolve() if cache_dir is not None else default_cache_dir()
    package_dir = Path(owdedup.__file__).resolve().parent
    wanted = set(only or ())
    listed = manifest_actions(manifest)
    unknown = wanted - {name for name, _, _ in listed}
    if unknown:
        raise BuildError(
            f"no zip action named {', '.join(sorted(unknown))} in {manifest}; "
            f"choose from {', '.join(name for name, _, _ in listed)}"
        )
    actions: list[ActionPlan] = []
    for name, stem, runtime in listed:
        if wanted and name not in wanted:
            continue
        if runtime != RUNTIME_KIND:
            raise BuildError(
                f"action {name}: runtime {runtime!r}, but the zip is built for {RUNTIME_KIND}"
            )
        if stem not in ACTION_REQUIREMENTS:
            raise BuildError(
                f"action {stem}: no entry in ACTION_REQUIREMENTS "
                f"(owdedup.deploy.build); say which packages it needs, even none"
            )
        source = project / "actions" / f"{stem}.py"
        if not source.is_file():
            raise BuildError(f"action {name}: {source} does not exist")
        requires = ACTION_REQUIREMENTS[stem]
        packages, from_runtime, conflicts = resolve_packages(requires)
        untrimmed = resolve_packages(requires, trims={})[0]
        kept = {pin.name for pin in packages}
        actions.append(ActionPlan(
            name=stem,
            source=source,
            zip_path=out / f"{stem}.zip",
            modules=runtime_modules(source, package_dir),
            requires=requires,
            packages=packages,
            from_runtime=from_runtime,
            conflicts=conflicts,
            trimmed=tuple(sorted(pin.name for pin in untrimmed if pin.name not in kept)),
        ))
    pins = {lib: installed_version(lib) for lib in IDENTITY_LIBRARIES}
    virtualenv_version = RUNTIME_PACKAGES["virtualenv"]
    assert virtualenv_version is not None
    return BuildPlan(manifest, out, cache, package_dir, MappingProxyType(pins),
                     virtualenv_version, tuple(actions))


# Which owdedup modules an action needs ----------------------------------------------------


def _is_tooling(module: str) -> bool:
    return any(module == t or module.startswith(t + ".") for t in TOOLING_MODULES)


def _module_path(module: str, package_dir: Path) -> Path | None:
    parts = module.split(".")[1:]
    base = package_dir.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str) -> Iterator[str]:
    """Every module name *path* may import: import statements anywhere (lazy ones too) and
    ``"owdedup.x:Class"`` strings (the backend registries import those by name)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError) as exc:
        raise BuildError(f"cannot parse {path}: {exc}") from exc
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")
                parent = parent if is_package else parent[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _BACKEND_TARGET.fullmatch(node.value)
            if match:
                yield match[1]


def runtime_modules(source: Path, package_dir: Path) -> tuple[str, ...]:
    """The files of ``owdedup`` that *source* can reach through its imports, plus the
    identity modules and every package ``__init__`` on the way, relative to the package's
    parent (``owdedup/action.py``)."""
    seen: dict[str, Path] = {}
    stack: list[tuple[str, Path, str]] = [("__main__", source, "")]
    stack += [(m, p, "identity") for m in IDENTITY_MODULES
              if (p := _module_path(m, package_dir)) is not None]
    while stack:
        module, path, via = stack.pop()
        for name in _imported_names(path, module):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # the module and its parent packages
                candidate = ".".join(parts[:depth])
                if candidate in seen:
                    continue
                found = _module_path(candidate, package_dir)
                if found is None:
                    continue  # an attribute (a class, a function), not a module
                if _is_tooling(candidate):
                    chain = f"{via} -> {module}" if via else module
                    raise BuildError(
                        f"{source.name}: {chain} imports {candidate}, which is CLI/tooling "
                        "and is never shipped in an action zip"
                    )
                seen[candidate] = found
                stack.append((candidate, found, f"{via} -> {module}" if via else module))
    for module in IDENTITY_MODULES:
        found = _module_path(module, package_dir)
        if found is None:
            raise BuildError(f"identity module {module} has no source file")
        seen[module] = found
    root = package_dir.parent
    return tuple(sorted(path.relative_to(root).as_posix() for path in seen.values()))


# Which third-party packages an action needs -----------------------------------------------


def installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(
            f"{name} is not installed here, so its version cannot be pinned for the zips; "
            "install the project with its dependencies"
        ) from None


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    marker: Marker = requirement.marker
    return any(
        marker.evaluate({**RUNTIME_MARKERS, "extra": extra}) for extra in ("", *extras)
    )


def resolve_packages(
    requires: Sequence[str],
    runtime: Mapping[str, str | None] = RUNTIME_PACKAGES,
    *,
    trims: Mapping[str, Trim] = PACKAGE_TRIMS,
) -> tuple[tuple[Pin, ...], tuple[str, ...], tuple[str, ...]]:
    """(pins, left to the runtime, conflicts) for *requires* and their dependencies, but the
    requirements *trims* drop (a distribution another one requires is still shipped).

    Versions are the ones installed here, so the zips run what the tests ran. Dependencies
    the runtime ships are left to it and not followed further, unless the runtime's version
    does not satisfy the requirement: then the zip ships its own copy (the virtualenv comes
    first on ``sys.path``), and the third list says why.
    """
    pins: dict[str, Pin] = {}
    provided: set[str] = set()
    conflicts: list[str] = []
    queue: list[tuple[Requirement, str]] = [(Requirement(name), "") for name in requires]
    done: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement, parent = queue.pop(0)
        name = canonicalize_name(requirement.name)
        if name in runtime and name not in pins:
            shipped = runtime[name]
            if shipped is None or requirement.specifier.contains(shipped, prereleases=True):
                provided.add(name)
                continue
            conflicts.append(
                f"{parent} requires {requirement.name}{requirement.specifier}, the runtime "
                f"ships {shipped}: the zip carries its own {requirement.name}"
            )
            provided.discard(name)
        version = installed_version(name)
        if not requirement.specifier.contains(version, prereleases=True):
            raise BuildError(
                f"{parent} requires {requirement}, but {name} {version} is installed here"
            )
        pins[name] = Pin(name, version)
        key = (name, frozenset(requirement.extras))
        if key in done:
            continue
        done.add(key)
        dropped = {canonicalize_name(d) for d in trims[name].drop_requirements} \
            if name in trims else set()
        for line in importlib.metadata.requires(name) or ():
            child = Requirement(line)
            if canonicalize_name(child.name) in dropped:
                continue
            if _applies(child, requirement.extras):
                queue.append((child, name))
    return (tuple(sorted(pins.values())), tuple(sorted(provided)), tuple(sorted(conflicts)))


# Building ---------------------------------------------------------------------------------


def _run(argv: Sequence[str], what: str) -> None:
    done = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stdout.rstrip().splitlines()[-30:])
        raise BuildError(f"{what} failed (exit {done.returncode}):\n{tail}")


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


def _mode(arcname: str) -> int:
    """0o755 for shared libraries (``x.so``, ``libz.so.1``), 0o644 for everything else."""
    name = arcname.rsplit("/", 1)[-1]
    return 0o755 if name.endswith(".so") or ".so." in name else 0o644


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


#: Run by the build interpreter with ``-I -S`` and a fixed hash seed, so the bytecode depends
#: on the sources only: reads ``[[name, base64 source], ...]`` (JSON) on stdin, writes
#: ``[base64 pyc, ...]``. A hash-based pyc as importlib writes one: magic, flags (bit 0:
#: hash-based, bit 1: check the source), SipHash of the source, marshalled code.
_COMPILER = r"""
import base64, importlib.util, json, marshal, sys
flags = int(sys.argv[1])
out = []
for name, encoded in json.load(sys.stdin):
    source = base64.b64decode(encoded)
    code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    data = importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
    data += importlib.util.source_hash(source) + marshal.dumps(code)
    out.append(base64.b64encode(data).decode("ascii"))
json.dump([sys.implementation.cache_tag, out], sys.stdout)
"""


def check_build_python() -> None:
    """The bytecode is this interpreter's: it must be the runtime's CPython minor version."""
    version = ".".join(map(str, sys.version_info[:2]))
    if sys.implementation.name != "cpython" or version != RUNTIME_PYTHON:
        raise BuildError(
            f"the zips carry bytecode for CPython {RUNTIME_PYTHON} ({RUNTIME_KIND}); build "
            f"them with CPython {RUNTIME_PYTHON}, not {sys.implementation.name} {version}"
        )


def pyc_name(name: str) -> str:
    """``pkg/mod.py`` -> ``pkg/__pycache__/mod.cpython-311.pyc``."""
    folder, _, file = name.rpartition("/")
    pyc = f"__pycache__/{file.removesuffix('.py')}.{PYC_TAG}.pyc"
    return f"{folder}/{pyc}" if folder else pyc


def compile_bytecode(files: Mapping[str, bytes], *,
                     mode: py_compile.PycInvalidationMode = PYC_INVALIDATION) -> dict[str, bytes]:
    """Hash-based bytecode of every ``.py`` in *files* but ``__main__.py`` (which the runtime
    renames): pyc archive name -> content. Each code object is compiled with its archive name
    as its file name (importlib replaces it with the real path on import)."""
    check_build_python()
    if mode is py_compile.PycInvalidationMode.TIMESTAMP:
        raise BuildError("timestamp-based bytecode is ignored once the zip is unpacked")
    flags = 0b01 | (0b10 if mode is py_compile.PycInvalidationMode.CHECKED_HASH else 0)
    sources = sorted((name, content) for name, content in files.items()
                     if name.endswith(".py") and name != "__main__.py")
    request = json.dumps([[name, base64.b64encode(content).decode("ascii")]
                          for name, content in sources])
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _COMPILER, str(flags)],
        input=request, capture_output=True, text=True, check=False,
        env={"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")},
    )
    if done.returncode != 0:
        raise BuildError(f"compiling the bytecode failed:\n{done.stderr[-3000:]}")
    tag, compiled = json.loads(done.stdout)
    if tag != PYC_TAG or len(compiled) != len(sources):
        raise BuildError(f"the compiler answered {tag} with {len(compiled)} of "
                         f"{len(sources)} files; expected {PYC_TAG}")
    return {pyc_name(name): base64.b64decode(data)
            for (name, _), data in zip(sources, compiled, strict=True)}


def action_files(
    plan: BuildPlan, action: ActionPlan, site: Path, activate: bytes
) -> dict[str, bytes]:
    """Every file of *action*'s zip: archive name -> content."""
    files: dict[str, bytes] = {"__main__.py": action.source.read_bytes()}
    root = plan.package_dir.parent
    for module in action.modules:
        files[module] = (root / module).read_bytes()
    files[PINS_FILE] = (json.dumps(dict(plan.pins), indent=2, sort_keys=True) + "\n").encode()
    files[ACTIVATE_THIS] = activate
    files.update(_site_files(site))
    apply_trims(files, action.packages)
    check_trimmed_imports(files, action.trimmed)
    files.update(compile_bytecode(files))
    return files


def write_zip(path: Path, files: Mapping[str, bytes], folders: Iterable[str] = ()) -> None:
    """Write *files* (and the empty *folders*) as a reproducible zip: sorted entries with
    their folders, 1980-01-01 timestamps, 0o644 files (0o755 folders and shared libraries),
    deflate level 6."""
    folders = {
        "/".join(parts[:depth]) + "/"
        for name in [*files, *(f"{folder.rstrip('/')}/" for folder in folders)]
        for parts in [name.split("/")[:-1]]
        for depth in range(1, len(parts) + 1)
    }
    entries: list[tuple[str, bytes | None]] = [(d, None) for d in folders]
    entries += list(files.items())
    entries.sort(key=lambda entry: entry[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with zipfile.ZipFile(staging, "w") as archive:
        for name, content in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.create_system = 3  # Unix: the permission bits below are honoured
            if content is None:
                info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
                archive.writestr(info, b"", compress_type=zipfile.ZIP_STORED)
            else:
                info.external_attr = (stat.S_IFREG | _mode(name)) << 16
                archive.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED,
                                 compresslevel=ZIP_LEVEL)
    staging.replace(path)


def execute_plan(plan: BuildPlan, log: Log = _stderr) -> list[BuiltZip]:
    """Build every zip of *plan*; returns them in plan order."""
    check_build_python()
    activate = activate_this(plan.virtualenv_version, plan.cache_dir, log)
    built: list[BuiltZip] = []
    for action in plan.actions:
        for conflict in action.conflicts:
            log(f"note: {action.name}: {conflict}")
        started = time.monotonic()
        site = install_site_packages(action.packages, plan.cache_dir, log)
        # site-packages/ even when empty (dispatch): every zip has the same layout
        write_zip(action.zip_path, action_files(plan, action, site, activate), [SITE_PACKAGES])
        data = action.zip_path.read_bytes()
        if len(data) >= MAX_ZIP_BYTES:
            action.zip_path.unlink()
            raise BuildError(
                f"{action.name}.zip is {len(data) / 2**20:.1f} MiB, over OpenWhisk's "
                f"{MAX_ZIP_BYTES // 2**20} MiB code limit"
            )
        built.append(BuiltZip(action.name, action.zip_path, len(data),
                              hashlib.sha256(data).hexdigest(),
                              tuple(str(pin) for pin in action.packages)))
        log(f"built {action.zip_path} ({len(data) / 2**20:.2f} MiB, "
            f"{time.monotonic() - started:.1f}s)")
    return built


def build_actions(
    manifest_path: Path | str,
    out_dir: Path | str | None = None,
    *,
    cache_dir: Path | str | None = None,
    only: Iterable[str] | None = None,
    log: Log = _stderr,
) -> list[BuiltZip]:
    """Plan (:func:`plan_build`) and build (:func:`execute_plan`) the manifest's zips."""
    return execute_plan(plan_build(manifest_path, out_dir, cache_dir=cache_dir, only=only), log)


# Reporting --------------------------------------------------------------------------------


def request_bytes(zip_bytes: int) -> int:
    """Size of the zip once base64-encoded into the create request."""
    return 4 * ((zip_bytes + 2) // 3)


def size_report(built: Sequence[BuiltZip]) -> str:
    """One line per zip: size, size in the create request, packages; and the limits."""
    out = io.StringIO()
    out.write(f"{'action':<10} {'zip MiB':>8} {'base64 MiB':>10}  packages\n")
    for item in built:
        encoded = request_bytes(item.bytes)
        flag = "  (request over 50 MiB!)" if encoded >= REQUEST_LIMIT_BYTES else ""
        packages = ", ".join(item.packages) or "-"
        out.write(f"{item.name:<10} {item.bytes / 2**20:>8.2f} {encoded / 2**20:>10.2f}  "
                  f"{packages}{flag}\n")
    out.write(f"limits: zip < {MAX_ZIP_BYTES // 2**20} MiB (OpenWhisk code size); the create "
              f"request carries it base64-encoded and a standalone controller refuses "
              f"requests over {REQUEST_LIMIT_BYTES // 2**20} MiB\n")
    return out.getvalue()


def describe_plan(plan: BuildPlan) -> str:
    out = io.StringIO()
    out.write(f"{len(plan.actions)} zip(s) for {RUNTIME_KIND} -> {plan.out_dir}\n")
    out.write(f"_pins.json: {json.dumps(dict(plan.pins), sort_keys=True)}; "
              f"activate_this.py from virtualenv {plan.virtualenv_version}\n")
    for action in plan.actions:
        out.write(f"\n{action.name}: {action.source} -> {action.zip_path.name}\n")
        modules = ", ".join(m.removeprefix(PACKAGE + "/") for m in action.modules)
        out.write(f"  owdedup: {modules}\n")
        out.write(f"  packages: {', '.join(map(str, action.packages)) or '-'}\n")
        if action.from_runtime:
            out.write(f"  from the runtime: {', '.join(action.from_runtime)}\n")
        for conflict in action.conflicts:
            out.write(f"  note: {conflict}\n")
        if action.trimmed:
            out.write(f"  left out by PACKAGE_TRIMS: {', '.join(action.trimmed)}\n")
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m owdedup.deploy.build", description="Build the OpenWhisk action zips."
    )
    parser.add_argument("manifest", nargs="?", default="manifest.yaml", type=Path)
    parser.add_argument("--out", type=Path, help="output folder (default: build/actions)")
    parser.add_argument("--cache", type=Path, help=f"cache folder (default: ${ENV_CACHE})")
    parser.add_argument("--only", action="append", metavar="ACTION", help="build only these")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, build nothing")
    parser.add_argument("--json", action="store_true", help="print the plan/result as JSON")
    args = parser.parse_args(argv)
    try:
        plan = plan_build(args.manifest, args.out, cache_dir=args.cache, only=args.only)
        if args.dry_run:
            print(json.dumps(plan.to_dict(), indent=2) if args.json else describe_plan(plan),
                  end="\n" if args.json else "")
            return 0
        built = execute_plan(plan)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{**item.__dict__, "path": str(item.path)} for item in built], indent=2))
    else:
        print(size_report(built), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
