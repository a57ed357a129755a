"""The deploy planner: the manifest, the settings and the last record in, a list of
operations out. Nothing here builds, calls or writes anything: the operations are data, and
an executor (:mod:`owdedup.deploy.executor`) runs them, or only shows them (``--dry-run``).

A deployment is::

    BuildZips -> RecordDeployment(pending) -> RunWskdeploy -> DeleteEntity... -> RecordDeployment

where the deletions are what the last record has and the new plan has not (the Kafka feed
trigger and its rule after ``--no-kafka-feed``), and the pending record names every entity
that may exist once wskdeploy has run, so that a failure half-way leaves ``undeploy`` what
it needs. An undeployment is ``DeleteEntity`` for each recorded entity (or, with no record,
each entity the manifest describes), then ``ForgetDeployment``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from owdedup.deploy.deployed import Deployed, Entity, deletion_order, record_path
from owdedup.deploy.plan import Target
from owdedup.engine.manifest import Manifest, load_manifest


@dataclass(frozen=True)
class DeploySettings:
    """What a deployment is asked for (the secrets stay in ``target`` and the environment)."""

    project: Path
    target: Target
    kafka_feed: bool = True

    @property
    def manifest(self) -> Path:
        return self.project / "manifest.yaml"

    @property
    def record(self) -> Path:
        return record_path(self.project, self.target.apihost, self.target.namespace)


@dataclass(frozen=True)
class BuildZips:
    """Build the action zips the manifest names (:mod:`owdedup.deploy.build`)."""

    manifest: Path

    def describe(self) -> str:
        return f"build the action zips of {self.manifest}"


@dataclass(frozen=True)
class RunWskdeploy:
    """Deploy the manifest (minus its feed triggers unless ``kafka_feed``) with wskdeploy."""

    project: Path
    kafka_feed: bool
    entities: frozenset[Entity]

    def describe(self) -> str:
        return (f"wskdeploy {self.project / 'manifest.yaml'}"
                + ("" if self.kafka_feed else " without its Kafka feed triggers")
                + f": {len(self.entities)} entities")


@dataclass(frozen=True)
class DeleteEntity:
    """Delete one entity through the REST API (a trigger's feed told first, as ``wsk``
    does); one already gone is no error."""

    entity: Entity

    def describe(self) -> str:
        return f"delete {self.entity.describe()}"


@dataclass(frozen=True)
class RecordDeployment:
    path: Path
    record: Deployed

    def describe(self) -> str:
        state = "deployed" if self.record.complete else "pending (until wskdeploy succeeds)"
        return f"record {len(self.record.entities)} entities as {state} in {self.path}"


@dataclass(frozen=True)
class ForgetDeployment:
    path: Path

    def describe(self) -> str:
        return f"remove the deployment record {self.path}"


Operation = BuildZips | RunWskdeploy | DeleteEntity | RecordDeployment | ForgetDeployment


def manifest_entities(manifest: Manifest, *, kafka_feed: bool = True) -> frozenset[Entity]:
    """What wskdeploy creates for *manifest*: packages, actions and sequences (``pkg/name``),
    triggers and rules (in the namespace). Without ``kafka_feed``, the feed triggers and the
    rules on them are left out, as :func:`owdedup.deploy.plan.without_kafka_feed` does."""
    found: set[Entity] = set()
    for package in manifest.packages.values():
        found.add(Entity("package", package.name))
        found |= {Entity("action", f"{package.name}/{name}")
                  for name in (*package.actions, *package.sequences)}
        feeds = {t.name for t in package.triggers.values() if t.feed}
        found |= {Entity("trigger", t.name, t.feed) for t in package.triggers.values()
                  if kafka_feed or not t.feed}
        found |= {Entity("rule", r.name) for r in package.rules.values()
                  if kafka_feed or r.trigger not in feeds}
    return frozenset(found)


def plan_deploy(settings: DeploySettings, previous: Deployed | None) -> list[Operation]:
    """The operations that deploy the project's manifest and remove what *previous* (the
    last record for this target) has and the manifest no longer does."""
    manifest = load_manifest(settings.manifest, {})
    wanted = manifest_entities(manifest, kafka_feed=settings.kafka_feed)
    before = previous.entities if previous is not None else frozenset()
    stale = before - wanted
    # the same name recorded with another feed is the same entity: wskdeploy overwrites it
    stale = frozenset(e for e in stale if (e.kind, e.name) not in {(w.kind, w.name)
                                                                   for w in wanted})
    target = settings.target

    def record(entities: frozenset[Entity], complete: bool) -> RecordDeployment:
        return RecordDeployment(settings.record, Deployed(
            target.apihost, target.namespace, str(settings.manifest), settings.kafka_feed,
            complete, entities))

    return [
        BuildZips(settings.manifest),
        record(wanted | before, complete=False),
        RunWskdeploy(settings.project, settings.kafka_feed, wanted),
        *(DeleteEntity(entity) for entity in deletion_order(stale)),
        record(wanted, complete=True),
    ]


def plan_undeploy(settings: DeploySettings, previous: Deployed | None) -> list[Operation]:
    """Delete every recorded entity; with no record (a deployment made before records were
    kept), every entity the manifest describes, feed triggers included."""
    if previous is not None:
        entities = previous.entities
    else:
        entities = manifest_entities(load_manifest(settings.manifest, {}), kafka_feed=True)
    return [*(DeleteEntity(entity) for entity in deletion_order(entities)),
            ForgetDeployment(settings.record)]


def describe(operations: Sequence[Operation]) -> str:
    return "".join(f"{n}. {op.describe()}\n" for n, op in enumerate(operations, 1))
