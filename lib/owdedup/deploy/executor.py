"""Running the planner's operations (:mod:`owdedup.deploy.operations`): :class:`Executor`
does them, through the zip builder, wskdeploy and OpenWhisk's REST API; :class:`DryRun`
only shows them, and what wskdeploy would do (``wskdeploy --preview``, which creates
nothing).

The key reaches wskdeploy in a 0600 ``wskprops`` file inside a private staging folder
(``--config``), never on its command line, and the REST calls in an ``Authorization``
header; the services' credentials reach wskdeploy through the environment (the manifest's
``$VAR`` inputs). Nothing printed here holds a credential.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from owdedup.deploy import deployed
from owdedup.deploy.deployed import COLLECTION, Entity
from owdedup.deploy.operations import (
    BuildZips,
    DeleteEntity,
    ForgetDeployment,
    Operation,
    RecordDeployment,
    RunWskdeploy,
)
from owdedup.deploy.plan import SECRET_VARIABLES, Target, stage
from owdedup.openwhisk.client import Credentials, OpenWhiskClient, PlatformUnreachable, Reply
from owdedup.runtime.errors import OwdedupError

#: Optional wskdeploy deployment files, looked for beside the manifest in this order.
DEPLOYMENT_FILES: Final = ("deployment.yaml", "deployment.yml")
REST_TIMEOUT_S: Final = 70.0

Say = Callable[[str], None]


def _stdout(message: str) -> None:
    print(message, flush=True)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class DeployError(OwdedupError):
    """An operation failed: the message names it and what is left behind."""

    kind = "deploy"


# OpenWhisk's REST API -----------------------------------------------------------------------


@dataclass(frozen=True)
class Rest:
    """The deletions, through the one OpenWhisk client (:mod:`owdedup.openwhisk.client`):
    the key in a Basic ``Authorization`` header, never on a command line."""

    target: Target

    def _client(self, namespace: str | None = None) -> OpenWhiskClient:
        host = self.target.apihost.rstrip("/")
        host = host if "://" in host else f"https://{host}"  # as wsk reads a bare APIHOST
        return OpenWhiskClient(Credentials(host, self.target.auth,
                                           namespace or self.target.namespace),
                               max_connections=1, timeout_s=REST_TIMEOUT_S)

    def _entity(self, method: str, entity: Entity) -> Reply:
        client = self._client()
        try:
            return client.entity(method, COLLECTION[entity.kind], entity.name)
        except PlatformUnreachable as exc:
            raise DeployError(f"{method} {COLLECTION[entity.kind]}/{entity.name} failed: "
                              f"{exc}") from None
        finally:
            client.close()

    def delete(self, entity: Entity, say: Say) -> bool:
        """Delete *entity*; False when it was not there. A trigger with a feed (as the
        server has it, not as recorded) gets the feed's ``DELETE`` first, as ``wsk trigger
        delete`` does; a feed that refuses is reported and the trigger deleted all the same,
        so that nothing fires it."""
        if entity.kind == "trigger":
            found = self._entity("GET", entity)
            if found.status == 404:
                return False
            feed = _feed_annotation(found.body)
            if feed:
                self._delete_feed(feed, entity.name, say)
        reply = self._entity("DELETE", entity)
        if reply.status == 404:
            return False
        if reply.status >= 300:
            error = reply.body.get("error") if isinstance(reply.body, dict) else reply.body
            raise DeployError(f"cannot delete {entity.describe()}: HTTP {reply.status} {error}")
        return True

    def _delete_feed(self, feed: str, trigger: str, say: Say) -> None:
        feed_namespace, _, action = feed.strip("/").partition("/")
        params = {"lifecycleEvent": "DELETE", "authKey": self.target.auth,
                  "triggerName": f"/{self.target.namespace}/{trigger}"}
        client = self._client(feed_namespace)
        try:
            reply = client.invoke(action, params, blocking=True)
        except PlatformUnreachable as exc:
            raise DeployError(f"the feed {feed} for trigger {trigger}: {exc}") from None
        finally:
            client.close()
        response = reply.body.get("response") if isinstance(reply.body, dict) else None
        if reply.status == 200 and isinstance(response, dict) and response.get("success"):
            return
        result = response.get("result") if isinstance(response, dict) else None
        why = result.get("error") if isinstance(result, dict) else None
        say(f"warning: the feed {feed} did not take back trigger {trigger} (HTTP {reply.status}"
            f"{': ' + str(why) if why else ''}); the trigger is deleted all the same")


def _feed_annotation(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return None
    for item in doc.get("annotations") or []:
        if isinstance(item, dict) and item.get("key") == "feed" and item.get("value"):
            return str(item["value"])
    return None


# wskdeploy ------------------------------------------------------------------------------------


def wskdeploy_command(wskdeploy: Path, project: Path, staged: Path, config: Path) -> list[str]:
    command = [str(wskdeploy), "-m", str(staged), "--config", str(config)]
    for name in DEPLOYMENT_FILES:
        if (project / name).is_file():
            command += ["-d", str(project / name)]
            break
    return command


def masked_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """*environ* with each set credential replaced by ``<set>``: ``--preview`` prints every
    input's value."""
    return {**environ, **{name: "<set>" for name in SECRET_VARIABLES if environ.get(name)}}


# The executors --------------------------------------------------------------------------------


@dataclass
class Executor:
    """Runs operations for real. ``environ`` binds the manifest's ``$VAR`` inputs."""

    target: Target
    environ: Mapping[str, str]
    wskdeploy: Path | None
    #: How to name the undeploy command in messages (``./deploy.sh`` calls through here).
    command: str = "owdedup"
    say: Say = _stdout
    warn: Say = _stderr
    done: list[Operation] = field(default_factory=list)

    def run(self, operations: Sequence[Operation]) -> None:
        for operation in operations:
            self.execute(operation)
            self.done.append(operation)

    def execute(self, operation: Operation) -> None:
        match operation:
            case BuildZips(manifest):
                from owdedup.deploy.build import build_actions, size_report

                self.say("== building the action zips")
                self.say(size_report(build_actions(manifest)).rstrip("\n"))
            case RecordDeployment(path, record):
                deployed.save(path, record)
            case RunWskdeploy(project, kafka_feed, _):
                self.say("== wskdeploy")
                self._wskdeploy(project, kafka_feed)
            case DeleteEntity(entity):
                self._delete(entity)
            case ForgetDeployment(path):
                deployed.forget(path)

    def _wskdeploy(self, project: Path, kafka_feed: bool) -> None:
        if self.wskdeploy is None:
            raise DeployError("no wskdeploy to run")
        with tempfile.TemporaryDirectory(prefix="owdedup-deploy.") as folder:  # mode 0700
            out = Path(folder)
            staged = stage(project, out, self.target, kafka_feed=kafka_feed)
            command = wskdeploy_command(self.wskdeploy, project, staged, out / "wskprops")
            status = subprocess.run(command, cwd=out, env=dict(self.environ),
                                    stdin=subprocess.DEVNULL, check=False).returncode
        if status != 0:
            raise DeployError(
                f"wskdeploy failed (exit {status}); entities created before the failure stay: "
                f"'{self.command} undeploy' removes them")

    def _delete(self, entity: Entity) -> None:
        gone = Rest(self.target).delete(entity, self.warn)
        self.say(f"deleted {entity.describe()}" if gone
                 else f"{entity.describe()}: already gone")


@dataclass
class DryRun:
    """Shows the operations; builds, creates, deletes and records nothing. wskdeploy runs
    with ``--preview`` (on placeholder zips, with the credentials shown as ``<set>``)."""

    target: Target
    environ: Mapping[str, str]
    wskdeploy: Path | None
    say: Say = _stdout

    def run(self, operations: Sequence[Operation]) -> None:
        for operation in operations:
            self.execute(operation)
        self.say("dry run: nothing was built or created")

    def execute(self, operation: Operation) -> None:
        match operation:
            case BuildZips(manifest):
                from owdedup.deploy.build import describe_plan, plan_build

                self.say("== zips that would be built")
                self.say(describe_plan(plan_build(manifest)).rstrip("\n"))
            case RunWskdeploy(project, kafka_feed, _):
                self.say("== what wskdeploy would deploy (--preview)")
                self._preview(project, kafka_feed)
            case RecordDeployment() | DeleteEntity() | ForgetDeployment():
                self.say(f"would {operation.describe()}")

    def _preview(self, project: Path, kafka_feed: bool) -> None:
        if self.wskdeploy is None:
            raise DeployError("no wskdeploy to run")
        with tempfile.TemporaryDirectory(prefix="owdedup-deploy.") as folder:
            out = Path(folder)
            staged = stage(project, out, self.target, kafka_feed=kafka_feed, placeholders=True)
            command = [*wskdeploy_command(self.wskdeploy, project, staged, out / "wskprops"),
                       "--preview"]
            status = subprocess.run(command, cwd=out, env=masked_environment(self.environ),
                                    stdin=subprocess.DEVNULL, check=False).returncode
        if status != 0:
            raise DeployError(f"wskdeploy --preview failed (exit {status})")

