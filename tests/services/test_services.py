"""End to end with the real services (opt-in: ``OWDEDUP_SERVICES=1``).

Uses the installs in the services cache (installing them on first use: several minutes for
MinIO's Go build) but its own state folder and free ports, so a developer's running
``owdedup services`` are left alone.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from owdedup.services import (
    ServicesConfig,
    couchdb,
    env_vars,
    kafka,
    minio,
    start,
    status_all,
    stop,
)
from tests.service_fixtures import Services
from tests.tooling import missing, wait_until

#: The CouchDB-API server's admin (set by the fixture below).
_ADMIN: tuple[str, str] = ("", "")
ANONYMOUS = ("", "")


@pytest.fixture(scope="module")
def services(services: Services) -> ServicesConfig:
    global _ADMIN
    if services.config is None:
        missing("these tests exercise the local process manager (not used with Docker)")
    _ADMIN = couchdb.couchdb_credentials(services.config)
    return services.config


def _http(
    method: str, url: str, body: dict[str, Any] | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, Any]:
    """One request to the CouchDB-API server, as its admin unless *auth* is ("", "")."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    user, password = auth if auth is not None else _ADMIN
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _upload(config: ServicesConfig, tmp_path: Path, key: str) -> None:
    source = tmp_path / "upload.txt"
    source.write_text(f"content of {key}\n")
    minio.mc(config, "cp", str(source), f"{config.mc_alias}/{config.in_bucket}/{key}")


def _events(config: ServicesConfig, idle_ms: int = 8000) -> list[dict[str, Any]]:
    """Every MinIO event on the topic so far (the console consumer, from the beginning)."""
    argv = kafka.kafka_java(
        config, kafka.CONSOLE_CONSUMER, "--bootstrap-server", config.kafka_bootstrap,
        "--topic", config.topic, "--from-beginning", "--timeout-ms", str(idle_ms),
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _wait_for_event(config: ServicesConfig, key: str, timeout: float = 60) -> dict[str, Any]:
    wanted = f"{config.in_bucket}/{key}"

    def event() -> dict[str, Any] | None:
        return next((e for e in _events(config) if e.get("Key") == wanted), None)

    return wait_until(event, timeout=timeout, interval=1,
                      what=f"a MinIO event for {wanted} on topic {config.topic}")


def test_all_services_ready_and_env(services: ServicesConfig) -> None:
    assert [(s.name, s.state) for s in status_all(services)] == [
        ("couchdb", "running"), ("kafka", "running"), ("minio", "running")
    ]
    env = env_vars(services)
    assert env["OWDEDUP_STORE"] == f"http://127.0.0.1:{services.minio_port}"
    assert env["OWDEDUP_KAFKA"] == f"127.0.0.1:{services.kafka_port}"
    assert services.topic in kafka.kafka_metadata(services.host, services.kafka_port).topics
    buckets = minio.mc(services, "--json", "ls", services.mc_alias)
    assert services.in_bucket in buckets and services.out_bucket in buckets


def test_upload_event_reaches_kafka(services: ServicesConfig, tmp_path: Path) -> None:
    key = f"dir/{uuid.uuid4().hex} a.txt"
    _upload(services, tmp_path, key)
    event = _wait_for_event(services, key)
    record = event["Records"][0]
    assert event["EventName"] == "s3:ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == services.in_bucket
    assert urllib.parse.unquote_plus(record["s3"]["object"]["key"]) == key
    assert record["s3"]["object"]["size"] == len(f"content of {key}\n")


def test_couchdb_api_put_get_and_conflict(services: ServicesConfig) -> None:
    db = f"{services.records_url}/owdedup-test-{uuid.uuid4().hex[:8]}"
    assert _http("PUT", db)[0] == 201
    status, created = _http("PUT", f"{db}/doc", {"value": 1})
    assert status == 201
    status, doc = _http("GET", f"{db}/doc")
    assert (status, doc["value"], doc["_rev"]) == (200, 1, created["rev"])
    assert _http("PUT", f"{db}/doc", {"value": 2, "_rev": created["rev"]})[0] == 201
    status, body = _http("PUT", f"{db}/doc", {"value": 3, "_rev": created["rev"]})
    assert (status, body["error"]) == (409, "conflict")


def test_the_record_database_refuses_anonymous_writes_and_survives_them(
    services: ServicesConfig,
) -> None:
    env = env_vars(services)
    assert (env["OWDEDUP_RECORDS_USERNAME"], env["OWDEDUP_RECORDS_PASSWORD"]) == _ADMIN
    db = f"{services.records_url}/owdedup"
    forged = {"type": "record", "function_id": "f" * 64, "input_digest": "d" * 64}
    assert _http("PUT", f"{db}/rec:forged", forged, auth=ANONYMOUS)[0] == 401
    assert _http("PUT", f"{db}/rec:forged", forged, auth=(_ADMIN[0], "wrong"))[0] == 401
    assert _http("GET", f"{db}/_all_docs", auth=ANONYMOUS)[0] == 401
    # Refused creations and deletions used to crash the server or hang every later request.
    assert _http("PUT", f"{services.records_url}/anon-{uuid.uuid4().hex[:8]}",
                 auth=ANONYMOUS)[0] == 401
    assert _http("DELETE", db, auth=ANONYMOUS)[0] == 401
    assert _http("PUT", f"{db}/_security", {}, auth=ANONYMOUS)[0] == 401
    status, created = _http("PUT", f"{db}/by-admin-{uuid.uuid4().hex[:8]}", {"value": 1})
    assert status == 201 and created["ok"]
    assert _http("GET", f"{db}/rec:forged")[0] == 404  # nothing was written


def test_restart_keeps_data_and_queues_events(
    services: ServicesConfig, tmp_path: Path
) -> None:
    db = f"{services.records_url}/owdedup-restart"
    _http("PUT", db)
    assert _http("PUT", f"{db}/kept", {"value": "kept"})[0] == 201
    before = f"before-{uuid.uuid4().hex}.txt"
    _upload(services, tmp_path, before)
    _wait_for_event(services, before)

    for name in ("minio", "kafka", "couchdb"):
        assert stop(services, name) is True
        assert start(services, name) > 0

    assert _http("GET", f"{db}/kept")[1]["value"] == "kept"
    stat = minio.mc(
        services, "--json", "stat", f"{services.mc_alias}/{services.in_bucket}/{before}"
    )
    assert json.loads(stat.splitlines()[0])["status"] == "success"
    assert any(event["Key"].endswith(before) for event in _events(services))

    # With Kafka down, MinIO keeps the event in its queue dir and delivers it later.
    stop(services, "kafka")
    queued = f"queued-{uuid.uuid4().hex}.txt"
    _upload(services, tmp_path, queued)
    start(services, "kafka")
    _wait_for_event(services, queued, timeout=90)
