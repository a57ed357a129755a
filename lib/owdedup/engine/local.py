"""The in-process executor: the engine wired to the in-process runner and a manifest file.

Every registered function runs here, deployed or not: for a function the manifest does not
deploy, the package that holds the step actions (``hash``, ``lookup``, ``record``) gains its
compute action ``NAME`` (the generic compute step, run in process) and its sequence
``dedup-NAME`` = hash, lookup, NAME, record, exactly as a manifest would declare them. So a
new function runs through ``owdedup invoke`` and ``map`` as soon as it is registered; the
manifest is needed only to deploy it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from owdedup.engine.executor import Engine
from owdedup.engine.manifest import (
    ActionDef,
    Manifest,
    RuleDef,
    SequenceDef,
    TriggerDef,
    load_manifest,
)
from owdedup.engine.runner import InProcessRunner, Main
from owdedup.runtime import env as env_names
from owdedup.runtime.action import make_main
from owdedup.runtime.functions import registry, sequence_of
from owdedup.runtime.pipeline import compute_step

#: The actions a function's sequence runs around its compute action, in order.
STEP_ACTIONS = ("hash", "lookup", "record")
#: The ``function`` of a compute action made here rather than read from the manifest.
REGISTERED = "(registered function)"


def default_manifest_path() -> Path:
    """``$OWDEDUP_MANIFEST``, else ``manifest.yaml`` in the current folder, else the copy of
    the project's manifest and actions that is installed with the package."""
    configured = os.environ.get(env_names.MANIFEST)
    if configured:
        return Path(configured)
    here = Path.cwd() / "manifest.yaml"
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[1] / "bundle" / "manifest.yaml"


class FunctionCatalog:
    """The manifest's entities, plus a compute action and a sequence for every registered
    function the manifest does not deploy (in the package that holds the step actions)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._actions: dict[str, ActionDef] = {}
        self._sequences: dict[str, SequenceDef] = {}
        steps = [pkg for pkg in manifest.packages.values()
                 if all(name in pkg.actions for name in STEP_ACTIONS)]
        if not steps:
            return  # not a dedup manifest: nothing to add
        package = steps[0]
        hash_, lookup, record = (f"{package.name}/{name}" for name in STEP_ACTIONS)
        for name in registry.names():
            sequence = sequence_of(name)
            if name not in package.actions:
                self._actions[f"{package.name}/{name}"] = ActionDef(
                    package.name, name, REGISTERED, "python:3.11",
                    annotations={"description": f"compute step of {name} (not deployed)"},
                )
            if sequence not in package.sequences:
                self._sequences[f"{package.name}/{sequence}"] = SequenceDef(
                    package.name, sequence, (hash_, lookup, f"{package.name}/{name}", record))

    def action(self, fqn: str) -> ActionDef | None:
        return self.manifest.action(fqn) or self._actions.get(fqn.strip("/"))

    def sequence(self, fqn: str) -> SequenceDef | None:
        return self.manifest.sequence(fqn) or self._sequences.get(fqn.strip("/"))

    def trigger(self, name: str) -> TriggerDef | None:
        return self.manifest.trigger(name)

    def rules_for(self, trigger: str) -> list[RuleDef]:
        return self.manifest.rules_for(trigger)

    def package_inputs(self, package: str) -> dict[str, Any]:
        return self.manifest.package_inputs(package)

    def entity_names(self) -> list[str]:
        return sorted({*self.manifest.entity_names(), *self._actions, *self._sequences})


class LocalRunner(InProcessRunner):
    """Runs the manifest's action files, and the generic compute step for the compute
    actions :class:`FunctionCatalog` adds (what their action file would hold)."""

    def load(self, action: ActionDef) -> Main:
        if action.function == REGISTERED:
            return make_main(compute_step)
        return super().load(action)


def local_executor(
    manifest_path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Engine:
    manifest = load_manifest(Path(manifest_path or default_manifest_path()),
                             os.environ if env is None else env)
    return Engine(FunctionCatalog(manifest), LocalRunner(manifest))
