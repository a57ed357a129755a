"""Build the action zips that ``manifest.yaml`` deploys, reproducibly: plan, then execute.

Every action whose ``function`` is ``build/actions/NAME.zip`` gets a zip built from
``actions/NAME.py``, laid out as the OpenWhisk Python runtime (``python:3.11``) expects::

    __main__.py                                   the action file (it holds ``main``)
    owdedup/__init__.py, owdedup/runtime/...      the runtime modules the action can import
                                                  (runtime/ is the allowlist; see needs)
    owdedup/runtime/_pins.json                    library versions of function identities
    .../__pycache__/NAME.cpython-311.pyc          bytecode of every shipped .py but
                                                  __main__.py and a code module the zip
                                                  cannot import, hash-based (see zipper)
    virtualenv/bin/activate_this.py               rendered from pypa virtualenv's template
    virtualenv/lib/python3.11/site-packages/...   the third-party packages the action needs
                                                  and the runtime does not already ship,
                                                  as wheels for Linux x86-64 CPython 3.11

:func:`plan_build` works out what would be built (sources, modules, pinned packages) without
building anything; :func:`execute_plan` builds it; :func:`build_actions` does both. The same
inputs give the same bytes: entries are sorted, timestamps fixed at 1980-01-01, permissions
fixed, fixed compression, and the bytecode hash-based.

The steps live beside this module, each in its own:

* :mod:`owdedup.deploy.runtime`: the target, what the ``python:3.11`` runtime is (its
  interpreter and platform, the packages it ships, the limits, the zip layout), and
  :data:`~owdedup.deploy.runtime.PACKAGE_TRIMS`, the checked cuts to shipped packages;
* :mod:`owdedup.deploy.needs`: which ``owdedup`` modules and which third-party packages
  (pinned) an action needs;
* :mod:`owdedup.deploy.install`: the zip's ``virtualenv/``: the packages pip-installed for
  the runtime's platform (cached per pin set under ``OWDEDUP_DEPLOY_CACHE``, default
  ``~/.cache/owdedup/deploy``, so a rebuild never runs pip), ``activate_this.py``, the trims
  applied;
* :mod:`owdedup.deploy.zipper`: the hash-based bytecode and the reproducible zip.

This module holds the plan, its execution and the size report.

Run ``python -m owdedup.deploy.build --dry-run`` to see the plan.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import owdedup
from owdedup.deploy.install import (
    _site_files,
    activate_this,
    apply_trims,
    check_trimmed_imports,
    install_site_packages,
)
from owdedup.deploy.needs import (
    STEP_REQUIREMENTS,
    Pin,
    action_requirements,
    check_function_ships,
    declared_requirements,
    identity_libraries,
    installed_version,
    left_out_backends,
    resolve_packages,
    runtime_modules,
    source_only,
)
from owdedup.deploy.runtime import (
    ACTIVATE_THIS,
    MAX_ZIP_BYTES,
    PACKAGE,
    PINS_FILE,
    REQUEST_LIMIT_BYTES,
    RUNTIME_KIND,
    RUNTIME_PACKAGES,
    RUNTIME_PLATFORMS,
    SITE_PACKAGES,
    BuildError,
    Log,
    _stderr,
)
from owdedup.deploy.zipper import check_build_python, compile_bytecode, pyc_name, write_zip
from owdedup.engine.manifest import load_manifest
from owdedup.runtime import env as env_names
from owdedup.runtime.errors import OwdedupError
from owdedup.services.config import cache_home

_FUNCTION_PATH = re.compile(r"(?:\./)?build/actions/(?P<name>[A-Za-z0-9_-]+)\.zip")
ENV_CACHE = env_names.DEPLOY_CACHE


# The plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionPlan:
    name: str
    source: Path
    zip_path: Path
    #: Files under ``owdedup/`` (relative to the package's parent folder), sorted.
    modules: tuple[str, ...]
    #: action_requirements()[name]: what the action needs directly.
    requires: tuple[str, ...]
    #: Everything installed into the zip's virtualenv (requirements and their dependencies).
    packages: tuple[Pin, ...]
    #: Dependencies left to the runtime because it ships them.
    from_runtime: tuple[str, ...]
    #: Runtime packages too old for a requirement: the zip ships its own copy of them.
    conflicts: tuple[str, ...]
    #: Distributions PACKAGE_TRIMS left out (the untrimmed packages would include them).
    trimmed: tuple[str, ...] = ()
    #: Backends left out because the zip lacks their client (needs.runtime_modules).
    left_out: tuple[str, ...] = ()
    #: Of modules, the code modules shipped without bytecode (needs.source_only).
    source_only: tuple[str, ...] = ()

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
            "left_out": list(self.left_out),
            "source_only": list(self.source_only),
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
    return cache_home("deploy", ENV_CACHE, environ)


def manifest_actions(manifest_path: Path) -> list[tuple[str, str, str | None]]:
    """(action name, zip stem, runtime) of every action whose function is a built zip, read
    through the one manifest model (:mod:`owdedup.engine.manifest`)."""
    try:
        manifest = load_manifest(manifest_path, {})
    except OwdedupError as exc:
        raise BuildError(f"cannot read {manifest_path}: {exc}") from exc
    found: list[tuple[str, str, str | None]] = []
    for package in manifest.packages.values():
        for action in package.actions.values():
            match = _FUNCTION_PATH.fullmatch(action.function)
            if match:
                found.append((action.name, match["name"], action.runtime or None))
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
    requirements = action_requirements()
    actions: dict[str, ActionPlan] = {}  # one zip per stem, however many actions use it
    for name, stem, runtime in listed:
        if (not wanted or name in wanted) and stem not in actions:
            actions[stem] = plan_action(name, stem, runtime, project, out, package_dir,
                                        requirements)
    return _build_plan(manifest, out, cache, package_dir, tuple(actions.values()))


def plan_action(
    name: str, stem: str, runtime: str | None, project: Path, out: Path, package_dir: Path,
    requirements: Mapping[str, tuple[str, ...]],
) -> ActionPlan:
    """The plan of one zip: ``actions/<stem>.py`` of *project*, built into *out*.

    The project's own steps (the conductor ``dedup`` too) come from the installed package's
    bundle when *project* has no copy: a user's project (``examples/wrapped``) deploys them
    without copying them. An action that is neither a step nor a registered function says
    what its zip needs in its own file (its PEP 723 block, :func:`declared_requirements`)."""
    if runtime != RUNTIME_KIND:
        raise BuildError(
            f"action {name}: runtime {runtime!r}, but the zip is built for {RUNTIME_KIND}"
        )
    source = project / "actions" / f"{stem}.py"
    if not source.is_file() and stem in STEP_REQUIREMENTS:
        source = package_dir / "bundle" / "actions" / f"{stem}.py"
    if not source.is_file():
        raise BuildError(f"action {name}: {source} does not exist")
    declared = requirements.get(stem)
    if declared is None:
        declared = declared_requirements(source)
    if declared is None:
        raise BuildError(
            f"action {stem}: neither a step in STEP_REQUIREMENTS (owdedup.deploy.needs) "
            f"nor a registered function (owdedup.runtime.functions), and {source.name} has "
            f"no '# /// script' block; list the packages it needs there, even none "
            f"('# dependencies = []')"
        )
    if stem in requirements and stem not in STEP_REQUIREMENTS:
        check_function_ships(stem)
    requires = declared
    packages, from_runtime, conflicts = resolve_packages(requires)
    untrimmed = resolve_packages(requires, trims={})[0]
    kept = {pin.name for pin in packages}
    available = kept | set(RUNTIME_PACKAGES)  # what the zip's backends can import
    modules = runtime_modules(source, package_dir, available)
    return ActionPlan(
        name=stem,
        source=source,
        zip_path=out / f"{stem}.zip",
        modules=modules,
        requires=requires,
        packages=packages,
        from_runtime=from_runtime,
        conflicts=conflicts,
        trimmed=tuple(sorted(pin.name for pin in untrimmed if pin.name not in kept)),
        left_out=left_out_backends(source, package_dir, available),
        source_only=source_only(modules, package_dir, available),
    )


def plan_standalone(
    stem: str, project: Path | str, out_dir: Path | str | None = None, *,
    cache_dir: Path | str | None = None,
) -> BuildPlan:
    """The plan of the one zip of ``actions/<stem>.py`` that the manifest does not deploy
    (the conductor ``dedup``, which ``owdedup wrap`` creates once per wrapped action)."""
    root = Path(project).resolve()
    out = Path(out_dir).resolve() if out_dir is not None else root / "build" / "actions"
    cache = Path(cache_dir).resolve() if cache_dir is not None else default_cache_dir()
    package_dir = Path(owdedup.__file__).resolve().parent
    action = plan_action(stem, stem, RUNTIME_KIND, root, out, package_dir,
                         action_requirements())
    return _build_plan(root / "manifest.yaml", out, cache, package_dir, (action,))


def _build_plan(manifest: Path, out: Path, cache: Path, package_dir: Path,
                actions: tuple[ActionPlan, ...]) -> BuildPlan:
    pins = {lib: installed_version(lib) for lib in identity_libraries()}
    virtualenv_version = RUNTIME_PACKAGES["virtualenv"]
    assert virtualenv_version is not None
    return BuildPlan(manifest, out, cache, package_dir, MappingProxyType(pins),
                     virtualenv_version, actions)


# Building ---------------------------------------------------------------------------------


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
    unused = {pyc_name(name) for name in action.source_only}
    files.update((n, pyc) for n, pyc in compile_bytecode(files).items() if n not in unused)
    return files


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
        if action.source_only:
            out.write(f"  without bytecode (source for identities only): "
                      f"{', '.join(action.source_only)}\n")
        if action.left_out:
            out.write(f"  backends left out (no client here): {', '.join(action.left_out)}\n")
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
