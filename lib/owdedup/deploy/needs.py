"""What an action zip must carry: which ``owdedup`` modules, which third-party packages.

``owdedup/...``: only modules of the runtime subpackage (:data:`RUNTIME_PACKAGE`, the
allowlist), and of it only what the action can import (:func:`runtime_modules`): the closure
of its imports, plus what the runtime's registries (:data:`REGISTRY_MODULES`) import or read
by name at run time: function plug-ins and their code modules (hashed into identities; as
source alone where the zip could not import them), and the store and record-store backends
that the zip can import. An action whose imports reach a CLI or tooling module is a build
error.

Third-party: the distributions :func:`action_requirements` lists for the action and their
dependencies, found from the installed metadata and pinned (:class:`Pin`) at the versions
installed here, so the zips run what the tests ran; but the ones the runtime already ships
(:data:`~owdedup.deploy.runtime.RUNTIME_PACKAGES`) and the requirements a trim
(:data:`~owdedup.deploy.runtime.PACKAGE_TRIMS`) drops.

Nothing here builds or fetches anything: :func:`owdedup.deploy.build.plan_build` uses it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
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
from owdedup.runtime.registry import Registry
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
    """What the compute action of *function* needs: it reads and writes objects, and claims
    its work and writes its records in the record store (whose IAM auth imports
    ibmcloudant's SDK: without it, a Cloudant deployment with an API key could not compute)."""
    clients = OBJECT_STORE_CLIENTS + RECORD_STORE_CLIENTS
    return clients + tuple(r for r in function.requirements if r not in clients)


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


#: The subpackage that runs inside actions: the only ``owdedup`` code an action zip may carry
#: (an allowlist, as chalice ships ``app.py``); everything else in ``owdedup`` is tooling.
RUNTIME_PACKAGE: Final = f"{PACKAGE}.runtime"

#: The runtime's registries, by the module that holds each as ``registry``. They import
#: ``"module:Class"`` targets by name at run time (a store or record-store backend chosen by
#: URL, a function plug-in), which no import statement shows; and the function registry's
#: functions hash their ``code_module``'s source into identities without importing it. A zip
#: that carries one of these modules carries all of that (tests/deploy/test_build.py checks
#: that this list names every registry of the runtime).
REGISTRY_MODULES: Final = (
    f"{RUNTIME_PACKAGE}.stores", f"{RUNTIME_PACKAGE}.records", f"{RUNTIME_PACKAGE}.functions",
)


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


def _eager_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes run when the module is imported: not function bodies, not ``if
    TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for orelse in node.orelse for n in (orelse, *_eager_nodes(orelse)))
            continue
        yield node
        yield from _eager_nodes(node)


def _imported_names(path: Path, module: str, *, eager: bool = False) -> Iterator[str]:
    """Every module name *path* may import: import statements anywhere (lazy ones too), or
    with *eager* only those that run when it is imported."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError) as exc:
        raise BuildError(f"cannot parse {path}: {exc}") from exc
    is_package = path.name == "__init__.py"
    for node in (_eager_nodes(tree) if eager else ast.walk(tree)):
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


@dataclass(frozen=True)
class RegistryTarget:
    """A runtime module a registry may import (or read) by name at run time."""

    module: str
    #: A store or record-store backend, chosen by URL: left out of a zip that lacks its
    #: client. (A function plug-in is never left out: the hit path imports it without the
    #: function's libraries, and its code module travels for its source bytes.)
    backend: bool


def registry_needs() -> dict[str, tuple[RegistryTarget, ...]]:
    """For each of :data:`REGISTRY_MODULES`: what its registry may import or read at run
    time (every target's module; for functions also every ``code_module``).

    Targets outside the runtime (a plug-in registered through ``OWDEDUP_FUNCTIONS`` for a
    local run) are not followed: they never ship, and no action is told about them.
    """
    found: dict[str, tuple[RegistryTarget, ...]] = {}
    for holder in REGISTRY_MODULES:
        held = importlib.import_module(holder).registry
        backend = isinstance(held, Registry)  # backends by URL scheme; else functions by name
        modules = [target.partition(":")[0] for target in held.targets()]
        if not backend:
            modules += [m for f in registry.all() for m in (type(f).__module__, f.code_module)]
        found[holder] = tuple(RegistryTarget(m, backend)
                              for m in sorted(set(modules)) if _is_runtime(m))
    return found


def runtime_modules(
    source: Path, package_dir: Path, available: Collection[str] | None = None
) -> tuple[str, ...]:
    """The files of ``owdedup`` the action *source* can import, and nothing else of it,
    relative to the package's parent (``owdedup/runtime/action.py``), sorted.

    That is the closure of its imports (import statements anywhere, lazy ones too, and every
    package ``__init__`` on the way), where a module that holds one of the runtime's
    registries (:data:`REGISTRY_MODULES`) also brings what that registry may import by name
    at run time (:func:`registry_needs`): every function plug-in and every function's
    ``code_module`` (its source bytes are hashed into identities, also where the function's
    libraries are absent), and the store and record-store backends, but one the zip could
    not import (the manifest's zips have none such today). A backend is left out when
    importing it imports a distribution that is neither in *available* (the zip's packages
    and the runtime image's; ``None``: any) nor in the standard library: there it could only
    fail, and a URL that selects it fails in the registry, naming the module.

    An import that reaches into ``owdedup`` outside the runtime (the CLI, deploy, serve...)
    is a build error, since that code is never shipped.
    """
    return _walk(source, package_dir, available)[0]


def left_out_backends(
    source: Path, package_dir: Path, available: Collection[str]
) -> tuple[str, ...]:
    """The backends :func:`runtime_modules` leaves out of *source*'s zip, each with the
    distributions it would need that the zip lacks."""
    return _walk(source, package_dir, available)[1]


def source_only(
    modules: Iterable[str], package_dir: Path, available: Collection[str]
) -> tuple[str, ...]:
    """Of the files *modules* (as :func:`runtime_modules` names them), the functions' code
    modules that the zip carries for their source bytes only (identities hash them): importing
    one needs a distribution the zip lacks (the thumbnail's Pillow, in the hit-path zips), so
    its bytecode could never be used and is left out."""
    usable = {canonicalize_name(n) for n in available}
    code_modules = {f.code_module for f in registry.all() if _is_runtime(f.code_module)}
    found = []
    for module in sorted(code_modules):
        path = _module_path(module, package_dir)
        if path is None:
            continue
        name = path.relative_to(package_dir.parent).as_posix()
        if name in modules and _distributions(module, package_dir) - usable:
            found.append(name)
    return tuple(found)


def _walk(source: Path, package_dir: Path, available: Collection[str] | None
          ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not (package_dir / "runtime" / "__init__.py").is_file():
        raise BuildError(f"{package_dir / 'runtime'} is not a package")
    by_registry = registry_needs()
    usable = None if available is None else {canonicalize_name(n) for n in available}
    seen: dict[str, Path] = {}
    left_out: list[str] = []
    stack: list[tuple[str, Path, str]] = [("__main__", source, source.name)]
    while stack:
        module, path, chain = stack.pop()
        names = list(_imported_names(path, module))
        for target in by_registry.get(module, ()):
            lacking = sorted(_distributions(target.module, package_dir) - usable) \
                if target.backend and usable is not None else []
            if lacking:
                left_out.append(f"{target.module} (needs {', '.join(lacking)})")
            else:
                names.append(target.module)
        for name in names:
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
                if not _is_runtime(candidate):
                    raise BuildError(
                        f"{chain} imports {candidate}, which is CLI/tooling and is never "
                        f"shipped in an action zip (only {RUNTIME_PACKAGE} is)"
                    )
                seen[candidate] = found
                stack.append((candidate, found, f"{chain} -> {candidate}"))
    root = package_dir.parent
    return (tuple(sorted(path.relative_to(root).as_posix() for path in seen.values())),
            tuple(sorted(set(left_out))))


@cache
def _top_level_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str, package_dir: Path) -> set[str]:
    """The third-party distributions (canonical names) that importing *module* imports, with
    the runtime modules it imports (a name no installed distribution provides counts as a
    distribution of its own name: it is not available either). Lazy imports do not count:
    the CouchDB backend imports ibmcloudant only for IAM auth, and works without it."""
    needed: set[str] = set()
    seen = {module}
    stack = [module]
    while stack:
        current = stack.pop()
        path = _module_path(current, package_dir)
        if path is None:
            continue  # an attribute, not a module
        for name in _imported_names(path, current, eager=True):
            top = name.partition(".")[0]
            if top == PACKAGE:
                if _is_runtime(name) and name not in seen:
                    seen.add(name)
                    stack.append(name)
            elif top and top not in sys.stdlib_module_names:
                needed.update(canonicalize_name(d)
                              for d in _top_level_distributions().get(top, [top]))
    return needed


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
