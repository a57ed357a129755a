"""What was deployed where: one record per OpenWhisk API host and namespace, as chalice
keeps ``.chalice/deployed/<stage>.json``.

The record lives beside the manifest, in ``.owdedup/deployed/<host>-<namespace>.json``
(folder 0700, file 0600), and names the entities a deployment created: packages, actions
(sequences included), triggers (with their feed) and rules. It holds no secret: no key, no
parameter value, only names. ``owdedup undeploy`` reads it, so it needs none of the deploy
flags repeated, and a redeploy deletes what the record has and the new plan has not (the
Kafka feed trigger after ``--no-kafka-feed``).

Before wskdeploy runs, the record is written with ``complete: false`` and every entity the
run may create added: a deployment that fails half-way still leaves behind what
``undeploy`` needs to clean up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from owdedup.runtime.errors import OwdedupError

RECORD_FORMAT: Final = 1
RECORD_DIR: Final = Path(".owdedup") / "deployed"

Kind = Literal["package", "action", "trigger", "rule"]
KINDS: Final[tuple[Kind, ...]] = ("package", "action", "trigger", "rule")
#: The REST API's collection of each kind.
COLLECTION: Final[dict[Kind, str]] = {"package": "packages", "action": "actions",
                                      "trigger": "triggers", "rule": "rules"}
#: OpenWhisk refuses to delete a package that still holds actions, and a rule is best gone
#: before its trigger: delete in this order.
DELETE_ORDER: Final[dict[Kind, int]] = {"rule": 0, "trigger": 1, "action": 2, "package": 3}

_NAME = re.compile(r"[A-Za-z0-9_@.\- ]+(?:/[A-Za-z0-9_@.\- ]+)?")


class DeployedRecordError(OwdedupError):
    """A deployment record cannot be read or does not belong to the target."""

    kind = "config"


@dataclass(frozen=True, order=True)
class Entity:
    """One OpenWhisk entity: ``name`` is ``package/action`` for an action, else a bare name.
    ``feed`` is the feed action of a trigger that has one."""

    kind: Kind
    name: str
    feed: str | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.name}" + (f" (feed {self.feed})" if self.feed else "")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "feed": self.feed}


def deletion_order(entities: Iterable[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (DELETE_ORDER[e.kind], e.name))


@dataclass(frozen=True)
class Deployed:
    """The record of one deployment to one API host and namespace."""

    apihost: str
    namespace: str
    manifest: str
    kafka_feed: bool
    complete: bool
    entities: frozenset[Entity] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "apihost": self.apihost,
            "namespace": self.namespace,
            "manifest": self.manifest,
            "kafka_feed": self.kafka_feed,
            "complete": self.complete,
            "updated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "entities": [e.to_json() for e in sorted(self.entities)],
        }


def record_path(project: Path, apihost: str, namespace: str) -> Path:
    """``<project>/.owdedup/deployed/<host>-<namespace>.json``; the host without its scheme,
    every character but letters, digits, ``.`` and ``-`` made ``_``."""
    host = apihost.split("://", 1)[-1].rstrip("/")
    safe = re.sub(r"[^A-Za-z0-9.\-]", "_", f"{host}-{namespace}")
    return project / RECORD_DIR / f"{safe}.json"


def _entity(raw: Any, path: Path) -> Entity:
    if not isinstance(raw, dict):
        raise DeployedRecordError(f"{path}: an entity is not an object")
    kind, name, feed = raw.get("kind"), raw.get("name"), raw.get("feed")
    if kind not in KINDS or not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DeployedRecordError(f"{path}: not an entity: kind {kind!r}, name {name!r}")
    if feed is not None and (kind != "trigger" or not isinstance(feed, str)):
        raise DeployedRecordError(f"{path}: {kind} {name}: a feed only belongs to a trigger")
    return Entity(kind, name, feed)


def load(path: Path, apihost: str, namespace: str) -> Deployed | None:
    """The record at *path*, checked to be one this code wrote for *apihost* and
    *namespace*; None when there is none."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DeployedRecordError(f"cannot read the deployment record {path}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != RECORD_FORMAT:
        raise DeployedRecordError(f"{path}: not a deployment record of format {RECORD_FORMAT}")
    if (raw.get("apihost"), raw.get("namespace")) != (apihost, namespace):
        raise DeployedRecordError(
            f"{path}: records a deployment to {raw.get('apihost')!r} namespace "
            f"{raw.get('namespace')!r}, not to {apihost!r} namespace {namespace!r}")
    entities = raw.get("entities")
    if not isinstance(entities, list):
        raise DeployedRecordError(f"{path}: 'entities' is not a list")
    return Deployed(apihost, namespace, str(raw.get("manifest", "")),
                    bool(raw.get("kafka_feed", True)), bool(raw.get("complete", False)),
                    frozenset(_entity(item, path) for item in entities))


def save(path: Path, record: Deployed) -> None:
    """Replace the record at once, readable by its owner only from its first byte."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record.to_json(), handle, indent=2)
        handle.write("\n")
    temp.replace(path)


def forget(path: Path) -> None:
    path.unlink(missing_ok=True)
