"""``owdedup wrap ACTION [--objects bucket/key] [--ignore p,q] [--version V] [--name NAME]``.

Puts an existing action (any kind: Python, Node.js, a Docker image, a sequence) behind the
deduplicating conductor: builds the conductor's zip (``actions/dedup.py``, like the other
action zips) and creates ``ACTION-dedup`` through the REST API with the annotations
``conductor: true`` (OpenWhisk runs it as a conductor), ``provide-api-key: true`` (it reads
the wrapped action's definition) and ``final: true`` (no invoker overrides its bound
configuration), and its configuration bound as ``owdedup_*`` parameters
(:mod:`owdedup.runtime.wrapped.config`), the stores' from the ``OWDEDUP_*`` environment as
``owdedup deploy`` takes them.

As in deploy, the plan is data (:class:`CheckWrapped`, :class:`BuildConductor`,
:class:`PutConductor`), run by :class:`Executor` or only shown by :class:`DryRun`
(``--dry-run``). No credential is ever printed: bound values from the store options are
shown as ``<set>``.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

import owdedup
from owdedup.deploy.build import BuildPlan, default_cache_dir, execute_plan, plan_standalone
from owdedup.deploy.runtime import RUNTIME_KIND, BuildError
from owdedup.openwhisk.client import Credentials, OpenWhiskClient, PlatformUnreachable
from owdedup.runtime import env as env_names
from owdedup.runtime.config import Settings
from owdedup.runtime.errors import ConfigError, NotFoundError, OwdedupError
from owdedup.runtime.wrapped import config as names
from owdedup.runtime.wrapped.keying import names_of, parse_objects

CONDUCTOR = "dedup"  # actions/dedup.py
ANNOTATIONS = {"conductor": True, "provide-api-key": True, "final": True}


@dataclass(frozen=True)
class CheckWrapped:
    """GET the wrapped action: wrapping one that does not exist is refused up front."""

    action: str

    def describe(self) -> str:
        return f"check that the action {self.action} exists"


@dataclass(frozen=True)
class BuildConductor:
    plan: BuildPlan

    def describe(self) -> str:
        return f"build {self.plan.actions[0].zip_path} ({RUNTIME_KIND})"


@dataclass(frozen=True)
class PutConductor:
    name: str
    zip_path: Path
    annotations: Mapping[str, Any]
    #: Bound parameters; the values of *secret* ones are never shown.
    parameters: Mapping[str, str] = field(repr=False)
    secret: frozenset[str] = frozenset()

    def shown_parameters(self) -> dict[str, str]:
        return {k: "<set>" if k in self.secret else v for k, v in self.parameters.items()}

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.shown_parameters().items())
        notes = ", ".join(f"{k}: {str(v).lower()}" for k, v in self.annotations.items())
        return f"create or update the action {self.name} ({notes}) bound with {shown}"


Operation = CheckWrapped | BuildConductor | PutConductor


def conductor_name(action: str) -> str:
    """``myfunction`` -> ``myfunction-dedup`` (outside any package, so that no package's
    parameters reach the conductor: they would pass to the wrapped action)."""
    return action.strip("/").rsplit("/", 1)[-1] + "-dedup"


def bound_parameters(action: str, objects: str, ignore: str, version: str, no_metadata: bool,
                     environ: Mapping[str, str]) -> tuple[dict[str, str], frozenset[str]]:
    """(the conductor's ``owdedup_*`` parameters, the names whose values are secret)."""
    missing = [name for name in (env_names.STORE, env_names.RECORDS) if not environ.get(name)]
    if missing:
        raise ConfigError(f"set {' and '.join(missing)}: the conductor must know where the "
                          "objects and the records are (as for owdedup deploy)")
    parsed = parse_objects(objects)  # refused here, not at the first call
    settings = Settings.resolve({}, environ)
    bound = {
        names.ACTION: action,
        names.OBJECTS: ",".join(map(str, parsed)) or "-",
        names.IGNORE: ",".join(names_of(ignore)),
        names.STORE: settings.store_url,
        names.RECORDS: settings.records_url,
    }
    if version:
        bound[names.VERSION] = version
    if no_metadata:
        bound[names.NO_METADATA] = "true"
    secret: set[str] = set()
    for prefix, options in (("store", settings.store_options),
                            ("records", settings.records_options)):
        for option, value in options:
            name = f"{names.PREFIX}{prefix}_{option}"
            bound[name] = value
            secret.add(name)  # options hold keys and passwords: shown as <set>, always
    return bound, frozenset(secret)


def conductor_source(project: Path) -> tuple[Path, Path | None]:
    """(the folder with ``actions/dedup.py``, where its zip goes): *project* if it has the
    conductor (its zip in its ``build/actions``), else the copy installed with the package
    (its zip in the deploy cache: an installed package may not be writable)."""
    if (project / "actions" / f"{CONDUCTOR}.py").is_file():
        return project, None
    bundle = Path(owdedup.__file__).resolve().parent / "bundle"
    return bundle, default_cache_dir() / "conductor"


def plan_wrap(action: str, *, objects: str, ignore: str, version: str, name: str,
              no_metadata: bool, project: Path, environ: Mapping[str, str]) -> list[Operation]:
    if not action.strip() or action.strip("/") != action.strip().strip("/"):
        raise ConfigError(f"{action!r} is not an action name")
    parameters, secret = bound_parameters(action, objects, ignore, version, no_metadata,
                                          environ)
    plan = plan_standalone(CONDUCTOR, *conductor_source(project))
    return [
        CheckWrapped(action),
        BuildConductor(plan),
        PutConductor(name or conductor_name(action), plan.actions[0].zip_path,
                     dict(ANNOTATIONS, description=f"deduplicates {action} (owdedup wrap)"),
                     parameters, secret),
    ]


class DryRun:
    def run(self, operations: list[Operation]) -> None:
        for op in operations:
            print(f"would {op.describe()}")


class Executor:
    def __init__(self, client: OpenWhiskClient) -> None:
        self.client = client

    def run(self, operations: list[Operation]) -> None:
        for op in operations:
            match op:
                case CheckWrapped():
                    reply = self.client.entity("GET", "actions", op.action)
                    if reply.status == 404:
                        raise NotFoundError(f"the action {op.action} does not exist; create it "
                                            f"first (wsk action create {op.action} ...)")
                    if reply.status != 200:
                        raise ConfigError(f"cannot read the action {op.action}: "
                                          f"HTTP {reply.status}")
                case BuildConductor():
                    execute_plan(op.plan, log=lambda line: print(line, file=sys.stderr))
                case PutConductor():
                    self._put(op)

    def _put(self, op: PutConductor) -> None:
        code = base64.b64encode(op.zip_path.read_bytes()).decode("ascii")
        body = {
            "exec": {"kind": RUNTIME_KIND, "binary": True, "main": "main", "code": code},
            "annotations": [{"key": k, "value": v} for k, v in op.annotations.items()],
            "parameters": [{"key": k, "value": v} for k, v in op.parameters.items()],
            "limits": {"timeout": 60000, "memory": 128},
        }
        reply = self.client.put_entity("actions", op.name, body, overwrite=True)
        if reply.status != 200:
            error = reply.body.get("error") if isinstance(reply.body, dict) else None
            raise ConfigError(f"creating {op.name} failed: HTTP {reply.status} {error or ''}"
                              .rstrip())
        print(f"created {op.name}: wsk action invoke {op.name} "
              "-p bucket BUCKET -p key KEY ... -r", file=sys.stderr)


def wrap_command(
    action: Annotated[str, typer.Argument(help="The action to deduplicate ([package/]name)")],
    objects: Annotated[str, typer.Option(
        "--objects", help="Object references, BUCKET_PARAM/KEY_PARAM[,...]; '-' for none")]
        = "bucket/key",
    ignore: Annotated[str, typer.Option(
        "--ignore", help="Parameters that do not affect the output (never hashed or stored), "
                         "e.g. dest_bucket,api_token")] = "",
    version: Annotated[str, typer.Option(
        "--version", help="Pin a version string instead of reading the action's definition")]
        = "",
    name: Annotated[str, typer.Option("--name", help="The conductor's name [ACTION-dedup]")]
        = "",
    no_metadata: Annotated[bool, typer.Option(
        "--no-metadata", help="Return results without the 'owdedup' metadata key")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; do nothing")]
        = False,
    project: Annotated[Path, typer.Option(
        "--project", help="Folder with actions/dedup.py [the current folder if it has "
                          "it, else the copy installed with owdedup]")] = Path(),
) -> None:
    """Put ACTION behind the deduplicating conductor ACTION-dedup."""
    environ = dict(os.environ)
    try:
        operations = plan_wrap(action, objects=objects, ignore=ignore, version=version,
                               name=name, no_metadata=no_metadata,
                               project=project.resolve(), environ=environ)
        if dry_run:
            DryRun().run(operations)
            return
        client = OpenWhiskClient(Credentials.resolve(environ))
        try:
            Executor(client).run(operations)
        finally:
            client.close()
    except (OwdedupError, BuildError, PlatformUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
