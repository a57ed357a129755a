"""The real services for the ``services`` and ``integration`` tiers: MinIO, Kafka and a
CouchDB-API server, started once per test session (the fixtures are registered by
``tests/conftest.py``).

Where a Docker engine answers, they come from ``docker-compose.yml`` through pytest-docker;
otherwise they are local processes installed and started by ``owdedup.services``, with a
state folder of their own and free ports, so a developer's running ``owdedup services`` is
left alone. ``OWDEDUP_SERVICES_MODE=local|docker`` forces one (``.ci/run`` forces ``local``,
so CI exercises the project's own installs even where a Docker engine answers).

With ``OWDEDUP_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a service that cannot start fails
the run; without it, the tier is skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from owdedup.services import ServiceError, ServicesConfig, down, env_vars, start, stop, up
from tests.tooling import listen_ports, missing

PROJECT = Path(__file__).resolve().parents[1]


@dataclass
class Services:
    """Endpoints (as the OWDEDUP_* environment) and start/stop control of each service."""

    env: dict[str, str]
    mode: str
    config: ServicesConfig | None = None
    compose: list[str] = field(default_factory=list)

    def stop(self, name: str) -> None:
        if self.config is not None:
            stop(self.config, name, quiet=True)
        else:
            subprocess.run([*self.compose, "stop", _COMPOSE_NAMES[name]], check=True)

    def start(self, name: str) -> None:
        if self.config is not None:
            start(self.config, name)
        else:
            subprocess.run([*self.compose, "start", _COMPOSE_NAMES[name]], check=True)
            _wait_ready(self.env, name)


_COMPOSE_NAMES = {"minio": "minio", "kafka": "kafka", "couchdb": "couchdb"}


def _docker_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _wait_ready(env: dict[str, str], name: str, timeout: float = 120) -> None:
    url = {"minio": env["OWDEDUP_STORE"] + "/minio/health/live",
           "couchdb": env["OWDEDUP_RECORDS"]}.get(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if url is None:
                host, port = env["OWDEDUP_KAFKA"].rsplit(":", 1)
                socket.create_connection((host, int(port)), timeout=2).close()
            else:
                urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(1)
    raise ServiceError(f"{name} did not become ready in {timeout:.0f} s")


def _local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    ports = listen_ports(5)
    config = replace(
        ServicesConfig.from_env(),
        state=tmp_path_factory.mktemp("services-state"),
        minio_port=ports[0], minio_console_port=ports[1], kafka_port=ports[2],
        kafka_controller_port=ports[3], couchdb_port=ports[4],
    )
    try:
        up(config)
        yield Services(env_vars(config), "local", config=config)
    finally:
        down(config)


def _docker(request: pytest.FixtureRequest) -> Iterator[Services]:
    # Credentials for this run only, handed to docker compose through the environment.
    os.environ.setdefault("OWDEDUP_MINIO_ROOT_USER", "owdedup-" + secrets.token_hex(4))
    os.environ.setdefault("OWDEDUP_MINIO_ROOT_PASSWORD", secrets.token_urlsafe(18))
    os.environ.setdefault("OWDEDUP_COUCHDB_USER", "owdedup")
    os.environ.setdefault("OWDEDUP_COUCHDB_PASSWORD", secrets.token_urlsafe(18))
    request.getfixturevalue("docker_services")
    env = {
        "OWDEDUP_STORE": "http://127.0.0.1:9000",
        "OWDEDUP_STORE_ACCESS_KEY": os.environ["OWDEDUP_MINIO_ROOT_USER"],
        "OWDEDUP_STORE_SECRET_KEY": os.environ["OWDEDUP_MINIO_ROOT_PASSWORD"],
        "OWDEDUP_RECORDS": "http://127.0.0.1:5984",
        "OWDEDUP_RECORDS_USERNAME": os.environ["OWDEDUP_COUCHDB_USER"],
        "OWDEDUP_RECORDS_PASSWORD": os.environ["OWDEDUP_COUCHDB_PASSWORD"],
        "OWDEDUP_KAFKA": "127.0.0.1:9092",
        "OWDEDUP_IN_BUCKET": "inbucket",
        "OWDEDUP_OUT_BUCKET": "outbucket",
        "OWDEDUP_KAFKA_TOPIC": "owdedup-uploads",
    }
    for name in ("minio", "couchdb", "kafka"):
        _wait_ready(env, name)
    compose = ["docker", "compose", "-f", str(PROJECT / "docker-compose.yml")]
    yield Services(env, "docker", compose=compose)


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(PROJECT / "docker-compose.yml")


@pytest.fixture(scope="session")
def services(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    mode = os.environ.get("OWDEDUP_SERVICES_MODE") or ("docker" if _docker_answers() else "local")
    chosen = _docker(request) if mode == "docker" else _local(tmp_path_factory)
    try:
        handle = next(chosen)
    except (ServiceError, OSError, subprocess.CalledProcessError) as exc:
        missing(f"services ({mode}) could not start: {exc}")
    yield handle
    next(chosen, None)


@pytest.fixture
def services_env(services: Services, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The services' OWDEDUP_* variables, also set in this process (actions read credentials
    from the environment, as they would from bound parameters)."""
    for name, value in services.env.items():
        monkeypatch.setenv(name, value)
    return dict(services.env)
