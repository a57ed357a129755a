"""What an action zip must carry: which ``owdedup`` modules, which third-party packages.

``owdedup/...``: the runtime subpackage (:data:`RUNTIME_PACKAGE`), whole, by allowlist. An
action whose imports reach a CLI or tooling module is a build error.

Third-party: the distributions :func:`action_requirements` lists for the action and their
dependencies, found from the installed metadata and pinned (:class:`Pin`) at the versions
installed here, so the zips run what the tests ran; but the ones the runtime already ships
(:data:`~owdedup.deploy.runtime.RUNTIME_PACKAGES`) and the requirements a trim
(:data:`~owdedup.deploy.runtime.PACKAGE_TRIMS`) drops.

Nothing here builds or fetches anything: :func:`owdedup.deploy.build.plan_build` uses it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from owdedup.deploy.runtime import (
    PACKAGE,
    PACKAGE_TRIMS,
    RUNTIME_MARKERS,
    RUNTIME_PACKAGES,
    BuildError,
    Trim,
)
from owdedup.runtime.errors import OwdedupError
from owdedup.runtime.functions import DedupFunction, registry
from owdedup.runtime.wrapped.identity import declared_packages

#: The clients of the stores a step talks to: the object store (S3: minio) and the record
#: store (CouchDB/Cloudant: ibmcloudant).
OBJECT_STORE_CLIENTS: Final = ("minio",)
RECORD_STORE_CLIENTS: Final = ("ibmcloudant",)

#: The distributions each step action needs beyond the runtime, their dependencies found
#: from the installed metadata. A function's compute action (named after the function)
#: needs the object-store client and the function's own ``requirements``.
STEP_REQUIREMENTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "hash": OBJECT_STORE_CLIENTS,
    "lookup": OBJECT_STORE_CLIENTS + RECORD_STORE_CLIENTS,
    "record": OBJECT_STORE_CLIENTS + RECORD_STORE_CLIENTS,
    "dispatch": (),
    # the conductor that wraps any action (owdedup wrap): it hashes, looks up and records
    "dedup": OBJECT_STORE_CLIENTS + RECORD_STORE_CLIENTS,
})


def compute_requirements(function: DedupFunction[Any]) -> tuple[str, ...]:
    """What the compute action of *function* needs: it reads and writes objects."""
    return OBJECT_STORE_CLIENTS + tuple(r for r in function.requirements
                                        if r not in OBJECT_STORE_CLIENTS)


def action_requirements() -> Mapping[str, tuple[str, ...]]:
    """Every buildable action and what it needs: the steps, and one compute action per
    registered function. An action that is not listed here cannot be built."""
    computes = {function.name: compute_requirements(function) for function in registry.all()}
    clash = sorted(set(computes) & set(STEP_REQUIREMENTS))
    if clash:
        raise BuildError(f"function(s) {', '.join(clash)} named like a step action")
    return MappingProxyType({**STEP_REQUIREMENTS, **computes})


#: The start of a PEP 723 block (``# /// script``), where a user's action lists its packages.
_SCRIPT_BLOCK_START = re.compile(r"(?m)^# /// script\s*$")


def declared_requirements(source: Path) -> tuple[str, ...] | None:
    """What an action that is neither a step nor a function says its zip needs: the
    ``dependencies`` of its PEP 723 block (``# /// script`` / ``# dependencies = ["minio",
    "pillow"]`` / ``# ///``), by name, read as the wrapper's identity of a Python file reads
    them; None when it has no such block."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read {source}: {exc.strerror}") from exc
    if not _SCRIPT_BLOCK_START.search(data.decode("utf-8", errors="replace")):
        return None
    try:
        return declared_packages(data, str(source))
    except OwdedupError as exc:
        raise BuildError(str(exc)) from exc


#: The subpackage that runs inside actions. It ships whole, by allowlist (as chalice ships
#: ``app.py``): everything else in ``owdedup`` is tooling and never enters a zip.
RUNTIME_PACKAGE: Final = f"{PACKAGE}.runtime"


def check_function_ships(name: str) -> None:
    """The compute action of function *name* can run only if the function's plug-in and its
    code module are in the runtime package: nothing else of ``owdedup`` (or of the project)
    enters a zip."""
    function = registry.get(name)
    for module in (type(function).__module__, function.code_module):
        if not _is_runtime(module):
            raise BuildError(
                f"function {name}: {module} is not in {RUNTIME_PACKAGE}, the only code an "
                f"action zip carries; move the function under lib/owdedup/runtime/"
            )


def identity_libraries() -> tuple[str, ...]:
    """The libraries whose versions are part of the registered functions' identities, written
    to ``_pins.json``."""
    return tuple(sorted({canonicalize_name(lib) for f in registry.all() for lib in f.libraries}))


_BACKEND_TARGET = re.compile(rf"({PACKAGE}(?:\.\w+)+):\w+")


@dataclass(frozen=True, order=True)
class Pin:
    """One distribution at one version, as pip names it (``name==version``)."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


# Which owdedup modules an action needs ----------------------------------------------------


def _is_runtime(module: str) -> bool:
    return module in (PACKAGE, RUNTIME_PACKAGE) or module.startswith(RUNTIME_PACKAGE + ".")


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
    """The files of ``owdedup`` an action zip carries, relative to the package's parent
    (``owdedup/runtime/action.py``): the package ``__init__`` and the whole runtime
    subpackage, whatever the action imports (an allowlist, so the identity modules and the
    backends the registries import by name are always there).

    The action's own imports are still read: one that reaches into ``owdedup`` outside the
    runtime (the CLI, deploy, serve...) is a build error, since that code is never shipped.
    """
    for name in _imported_names(source, "__main__"):
        if (name == PACKAGE or name.startswith(PACKAGE + ".")) and not _is_runtime(name) \
                and _module_path(name, package_dir) is not None:
            raise BuildError(
                f"{source.name} imports {name}, which is CLI/tooling and is never shipped in "
                f"an action zip (only {RUNTIME_PACKAGE} is)"
            )
    runtime_dir = package_dir / "runtime"
    if not (runtime_dir / "__init__.py").is_file():
        raise BuildError(f"{runtime_dir} is not a package")
    files = [package_dir / "__init__.py", *runtime_dir.rglob("*.py")]
    root = package_dir.parent
    return tuple(sorted(p.relative_to(root).as_posix() for p in files
                        if "__pycache__" not in p.parts))


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
