"""docker-compose.yml agrees with the local services and with the Docker test fixture.

No Docker engine runs here, so the containers themselves are not started by this tier; what
can be checked without one is that the file describes the same system as ``owdedup services``
(ports, buckets, topic, event target) and holds no credential.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from owdedup.services import couchdb
from owdedup.services.config import ServicesConfig
from owdedup.services.minio import MINIO_EVENT_GUARANTEES

PROJECT = Path(__file__).resolve().parents[2]
#: What ``owdedup services`` uses unless told otherwise (no folder is touched).
DEFAULTS = ServicesConfig(home=Path("unused"), state=Path("unused"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _published(service: dict[str, Any]) -> set[int]:
    ports = set()
    for spec in service.get("ports", []):
        host, published, _container = str(spec).split(":")
        assert host == "127.0.0.1", f"{spec} must bind 127.0.0.1 only"
        ports.add(int(published))
    return ports


def test_ports_are_the_local_services_defaults_on_loopback(compose: dict[str, Any]) -> None:
    defaults = DEFAULTS
    services = compose["services"]
    assert _published(services["minio"]) == {defaults.minio_port, defaults.minio_console_port}
    assert _published(services["kafka"]) == {defaults.kafka_port}
    assert _published(services["couchdb"]) == {defaults.couchdb_port}


def test_buckets_topic_and_event_target_match_the_local_services(
    compose: dict[str, Any],
) -> None:
    defaults = DEFAULTS
    services = compose["services"]
    target = defaults.kafka_target_id
    minio_env = services["minio"]["environment"]
    assert minio_env[f"MINIO_NOTIFY_KAFKA_ENABLE_{target}"] == "on"
    assert minio_env[f"MINIO_NOTIFY_KAFKA_TOPIC_{target}"] == defaults.topic
    assert minio_env[f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{target}"]  # events survive Kafka outages
    for name, value in MINIO_EVENT_GUARANTEES.items():  # and MinIO restarts
        assert minio_env[name] == value
    setup = " ".join(services["minio-setup"]["command"])
    alias, into, out = defaults.mc_alias, defaults.in_bucket, defaults.out_bucket
    assert f"mb --ignore-existing {alias}/{into} {alias}/{out}" in setup
    assert f"event add {alias}/{into} {defaults.kafka_target_arn} --event put" in setup
    assert f"MC_HOST_{alias}" in services["minio-setup"]["environment"]
    assert services["minio-setup"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_every_service_with_dependents_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}"
    # curl is not in the MinIO image: its check must use what the image has.
    assert "curl" not in services["minio"]["healthcheck"]["test"]


def test_no_credential_is_written_in_the_file(compose: dict[str, Any]) -> None:
    secret_names = re.compile(r"(PASSWORD|SECRET|ROOT_USER|_KEY)$|^MC_HOST_")
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if secret_names.search(variable):
                assert "${" in str(value), f"{name}.{variable} must come from the environment"
                assert not re.search(r":-[^}]", str(value)) or "USER" in variable, (
                    f"{name}.{variable} must have no default")


def test_couchdb_has_an_admin_as_the_local_services_do(compose: dict[str, Any]) -> None:
    """Like ``owdedup services`` (issue 8, item 2): an admin whose password has no default,
    named as the local one, so records are never written without credentials (CouchDB 3
    makes every new database admin-only, as the local services make theirs)."""
    env = compose["services"]["couchdb"]["environment"]
    assert env["COUCHDB_USER"] == f"${{OWDEDUP_COUCHDB_USER:-{couchdb.ADMIN_USER}}}"
    assert re.fullmatch(r"\$\{OWDEDUP_COUCHDB_PASSWORD:\?[^}]+\}", env["COUCHDB_PASSWORD"])
    assert compose["services"]["couchdb"]["image"].split(":")[1].startswith("3.")
