"""The deploy planner (operations as data), the deployment record and the dry run, without
a server: the runs against ``owdedup serve`` are in ``tests/deploy/test_deploy_sh.py``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from owdedup.deploy import deployed
from owdedup.deploy.deployed import Deployed, DeployedRecordError, Entity
from owdedup.deploy.executor import DryRun, masked_environment
from owdedup.deploy.operations import (
    BuildZips,
    DeleteEntity,
    DeploySettings,
    ForgetDeployment,
    RecordDeployment,
    RunWskdeploy,
    manifest_entities,
    plan_deploy,
    plan_undeploy,
)
from owdedup.deploy.plan import Target
from owdedup.engine.manifest import load_manifest
from tests.conftest import PROJECT
from tests.tooling import listen_ports

TARGET = Target("http://127.0.0.1:3233", "uuid:secret-key", "_", {})
FEED = "/whisk.system/messaging/kafkaFeed"
FEED_TRIGGER = Entity("trigger", "image-uploaded", FEED)
FEED_RULE = Entity("rule", "on-image-uploaded")
WEBHOOK_TRIGGER = Entity("trigger", "image-uploaded-webhook")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "manifest.yaml").write_text((PROJECT / "manifest.yaml").read_text())
    return root


def everything(*, kafka_feed: bool = True) -> frozenset[Entity]:
    return manifest_entities(load_manifest(PROJECT / "manifest.yaml", {}), kafka_feed=kafka_feed)


def record_of(entities: frozenset[Entity], *, kafka_feed: bool = True) -> Deployed:
    return Deployed(TARGET.apihost, TARGET.namespace, "manifest.yaml", kafka_feed, True,
                    entities)


def test_the_manifest_entities_with_and_without_the_feed() -> None:
    full = everything()
    assert {e.name for e in full if e.kind == "action"} == {
        f"owdedup/{a}" for a in ("hash", "lookup", "thumbnail", "record", "dispatch",
                                 "dedup-thumbnail")}
    assert {FEED_TRIGGER, FEED_RULE, WEBHOOK_TRIGGER} <= full
    assert full - everything(kafka_feed=False) == {FEED_TRIGGER, FEED_RULE}


def test_a_first_deployment_deletes_nothing(project: Path) -> None:
    settings = DeploySettings(project, TARGET)
    ops = plan_deploy(settings, None)
    assert [type(op) for op in ops] == [BuildZips, RecordDeployment, RunWskdeploy,
                                        RecordDeployment]
    pending, final = ops[1], ops[-1]
    assert isinstance(pending, RecordDeployment) and isinstance(final, RecordDeployment)
    assert not pending.record.complete and final.record.complete
    assert pending.record.entities == final.record.entities == everything()
    assert pending.path == settings.record == project / ".owdedup" / "deployed" / (
        "127.0.0.1_3233-_.json")


def test_a_redeploy_without_the_feed_deletes_the_feed_trigger_and_its_rule(
    project: Path,
) -> None:
    """The issue: a redeploy with --no-kafka-feed left the old feed trigger behind."""
    settings = DeploySettings(project, TARGET, kafka_feed=False)
    ops = plan_deploy(settings, record_of(everything()))
    deletions = [op.entity for op in ops if isinstance(op, DeleteEntity)]
    assert deletions == [FEED_RULE, FEED_TRIGGER]  # the rule before its trigger
    # deleted after wskdeploy succeeded; until then the pending record still has them
    kinds = [type(op) for op in ops]
    assert kinds.index(RunWskdeploy) < kinds.index(DeleteEntity)
    pending, final = ops[1], ops[-1]
    assert isinstance(pending, RecordDeployment) and isinstance(final, RecordDeployment)
    assert FEED_TRIGGER in pending.record.entities
    assert final.record.entities == everything(kafka_feed=False)
    run = next(op for op in ops if isinstance(op, RunWskdeploy))
    assert not run.kafka_feed and FEED_TRIGGER not in run.entities


def test_a_redeploy_deletes_what_the_manifest_dropped(project: Path) -> None:
    gone = Entity("action", "owdedup/old-step")
    ops = plan_deploy(DeploySettings(project, TARGET), record_of(everything() | {gone}))
    assert [op.entity for op in ops if isinstance(op, DeleteEntity)] == [gone]


def test_undeploy_deletes_what_was_recorded_in_order(project: Path) -> None:
    settings = DeploySettings(project, TARGET)
    recorded = everything(kafka_feed=False)
    ops = plan_undeploy(settings, record_of(recorded, kafka_feed=False))
    deleted = [op.entity for op in ops if isinstance(op, DeleteEntity)]
    assert set(deleted) == recorded
    assert [e.kind for e in deleted] == sorted(
        (e.kind for e in deleted), key=["rule", "trigger", "action", "package"].index)
    assert ops[-1] == ForgetDeployment(settings.record)
    # with no record (a deployment from before records): all the manifest, feed included
    ops = plan_undeploy(settings, None)
    assert {op.entity for op in ops if isinstance(op, DeleteEntity)} == everything()


def test_the_record_is_private_holds_no_secret_and_round_trips(tmp_path: Path) -> None:
    path = deployed.record_path(tmp_path, TARGET.apihost, TARGET.namespace)
    record = record_of(everything())
    deployed.save(path, record)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "secret-key" not in path.read_text()
    assert deployed.load(path, TARGET.apihost, TARGET.namespace) == record
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    assert deployed.load(tmp_path / "none.json", TARGET.apihost, "_") is None


def test_a_record_for_another_target_or_malformed_is_refused(tmp_path: Path) -> None:
    path = deployed.record_path(tmp_path, TARGET.apihost, TARGET.namespace)
    deployed.save(path, record_of(everything()))
    with pytest.raises(DeployedRecordError, match="not to 'http://other:3233'"):
        deployed.load(path, "http://other:3233", "_")
    raw = json.loads(path.read_text())
    raw["entities"].append({"kind": "rule", "name": "x", "feed": "/whisk.system/f"})
    path.write_text(json.dumps(raw))
    with pytest.raises(DeployedRecordError, match="a feed only belongs to a trigger"):
        deployed.load(path, TARGET.apihost, TARGET.namespace)
    raw["entities"][-1] = {"kind": "action", "name": "../../etc"}
    path.write_text(json.dumps(raw))
    with pytest.raises(DeployedRecordError, match="not an entity"):
        deployed.load(path, TARGET.apihost, TARGET.namespace)


def test_the_dry_run_shows_the_deletions_and_does_none(project: Path) -> None:
    settings = DeploySettings(project, TARGET)
    previous = record_of(everything())
    deployed.save(settings.record, previous)
    ops = plan_undeploy(settings, previous)
    said: list[str] = []
    DryRun(TARGET, {}, None, say=said.append).run(ops)
    assert "would delete trigger image-uploaded (feed /whisk.system/messaging/kafkaFeed)" in said
    assert said[-1] == "dry run: nothing was built or created"
    assert deployed.load(settings.record, TARGET.apihost, TARGET.namespace) == previous


def test_the_preview_sees_credentials_as_set_only() -> None:
    env = masked_environment({"OWDEDUP_STORE_SECRET_KEY": "sk", "OWDEDUP_RECORDS_PASSWORD": "",
                              "OWDEDUP_STORE": "http://minio:9000"})
    assert env == {"OWDEDUP_STORE_SECRET_KEY": "<set>", "OWDEDUP_RECORDS_PASSWORD": "",
                   "OWDEDUP_STORE": "http://minio:9000"}


def test_an_undeploy_that_fails_records_what_may_still_be_there(project: Path) -> None:
    """No record, an API host that does not answer: the undeploy fails naming the call, and
    leaves a record of every entity not deleted, so the next undeploy resumes from it."""
    (port,) = listen_ports(1)  # nothing listens there
    apihost = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OW_APIHOST": apihost, "OW_AUTH": TARGET.auth,
           "HOME": str(project), "WSK_CONFIG_FILE": ""}
    done = subprocess.run([sys.executable, "-m", "owdedup", "undeploy", "--project",
                           str(project)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DELETE rules/on-image-uploaded" in done.stderr
    assert TARGET.auth not in done.stdout + done.stderr
    path = deployed.record_path(project, apihost, "_")
    left = deployed.load(path, apihost, "_")
    assert left is not None and not left.complete and left.entities == everything()
    assert "secret-key" not in path.read_text()
