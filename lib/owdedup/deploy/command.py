"""``owdedup deploy [--dry-run] [--no-kafka-feed]`` and ``owdedup undeploy [--dry-run]``.

Check every setting (all missing ones listed at once, before anything is built or
created), plan (:mod:`owdedup.deploy.operations`), then run the plan
(:class:`~owdedup.deploy.executor.Executor`) or show it
(:class:`~owdedup.deploy.executor.DryRun`). What was deployed is recorded per API host and
namespace (:mod:`owdedup.deploy.deployed`), so ``undeploy`` takes no flags and a redeploy
removes what the manifest or the flags no longer ask for. ``deploy.sh`` calls these.

The target: ``OW_APIHOST``, ``OW_AUTH`` (UUID:KEY), ``OW_NAMESPACE`` (default ``_``), else the
``APIHOST=``/``AUTH=``/``NAMESPACE=`` lines of ``$WSK_CONFIG_FILE`` or ``~/.wskprops``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from owdedup.deploy import deployed, plan
from owdedup.deploy.executor import DryRun, Executor
from owdedup.deploy.operations import (
    DeleteEntity,
    DeploySettings,
    Operation,
    describe,
    plan_deploy,
    plan_undeploy,
)
from owdedup.runtime.errors import OwdedupError

DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Show what would be built, created and deleted; do none of it")]
ProjectOpt = Annotated[Path, typer.Option(
    "--project", help="Folder with manifest.yaml and actions/ (the record goes under "
                      ".owdedup/deployed/ there)")]
#: Hidden: how the undeploy command is named in messages (deploy.sh passes ./deploy.sh).
CommandOpt = Annotated[str, typer.Option("--command-name", hidden=True)]


def _fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def _exit_on_term() -> None:
    """SIGTERM unwinds like Ctrl-C: the staging folder (and its key file) is removed."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))


def _project(project: Path) -> Path:
    project = project.resolve()
    if not (project / "manifest.yaml").is_file():
        _fail(f"no manifest.yaml in {project} (--project names the folder that has it)", 2)
    return project


def deploy_command(
    dry_run: DryRunOpt = False,
    no_kafka_feed: Annotated[bool, typer.Option(
        "--no-kafka-feed", help="Leave out the Kafka feed trigger and its rule (and delete "
                                "them if a previous deployment made them)")] = False,
    project: ProjectOpt = Path(),
    command_name: CommandOpt = "owdedup",
) -> None:
    """Build the action zips and deploy manifest.yaml with wskdeploy; delete what the last
    deployment to this API host and namespace made and this one does not."""
    environ = dict(os.environ)
    root = _project(project)
    kafka_feed = not no_kafka_feed
    try:
        target = plan.require(environ, kafka_feed=kafka_feed)
    except OwdedupError as exc:
        _fail(str(exc), 2)
    try:
        wskdeploy = plan.wskdeploy_binary(environ)
    except OwdedupError as exc:
        _fail(f"{exc}; nothing was built or created", 2)
    print(target.describe(), file=sys.stderr)
    if not kafka_feed:
        print("no Kafka feed: the feed trigger and its rule are left out (uploads arrive "
              "through the trigger image-uploaded-webhook)", file=sys.stderr)
    settings = DeploySettings(root, target, kafka_feed)
    try:
        operations = plan_deploy(settings, deployed.load(settings.record, target.apihost,
                                                         target.namespace))
    except OwdedupError as exc:
        _fail(f"{exc}; nothing was built or created", 2)
    print(f"== plan\n{describe(operations)}", end="", flush=True)
    _exit_on_term()
    try:
        if dry_run:
            DryRun(target, environ, wskdeploy).run(operations)
        else:
            Executor(target, environ, wskdeploy, command=command_name).run(operations)
    except OwdedupError as exc:
        _fail(str(exc), 1)


def undeploy_command(
    dry_run: DryRunOpt = False,
    project: ProjectOpt = Path(),
) -> None:
    """Delete what the last deployment to this API host and namespace made (as recorded;
    with no record, what manifest.yaml describes). Needs only the target's settings."""
    environ = dict(os.environ)
    root = _project(project)
    try:
        target = plan.require(environ, undeploy=True)
        settings = DeploySettings(root, target)
        previous = deployed.load(settings.record, target.apihost, target.namespace)
    except OwdedupError as exc:
        _fail(str(exc), 2)
    if previous is None:
        print(f"no record of a deployment to {target.apihost} namespace {target.namespace} "
              f"in {settings.record.parent}: deleting what {settings.manifest} describes",
              file=sys.stderr)
    try:
        operations = plan_undeploy(settings, previous)
    except OwdedupError as exc:
        _fail(str(exc), 2)
    print(f"== plan\n{describe(operations)}", end="", flush=True)
    _exit_on_term()
    if dry_run:
        DryRun(target, environ, None).run(operations)
        return
    executor = Executor(target, environ, None)
    try:
        executor.run(operations)
    except OwdedupError as exc:
        # keep on record what may still be there, so that the next undeploy resumes
        deployed.save(settings.record, deployed.Deployed(
            target.apihost, target.namespace, str(settings.manifest),
            previous.kafka_feed if previous is not None else True, False,
            frozenset(_not_deleted(operations, executor.done))))
        _fail(f"{exc}; the entities not deleted are recorded in {settings.record}", 1)


def _not_deleted(operations: list[Operation], done: list[Operation]) -> list[deployed.Entity]:
    return [op.entity for op in operations if isinstance(op, DeleteEntity) and op not in done]
