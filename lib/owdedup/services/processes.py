"""Start, stop and inspect the local services as background processes on 127.0.0.1.

Each service runs in its own session with a pid file and a log file in ``<state>/run/``
(:mod:`owdedup.services.launcher`):

* ``couchdb``: pouchdb-server (CouchDB 1.x-style API) with its databases on disk
  (:mod:`owdedup.services.couchdb`);
* ``kafka``: a single-node KRaft broker+controller, formatted once with a random cluster id
  (:mod:`owdedup.services.kafka`);
* ``minio``: the MinIO server with a Kafka notification target; after it is up, ``mc``
  creates the buckets and subscribes the input bucket's puts to that target
  (:mod:`owdedup.services.minio`).

Each is a :class:`~owdedup.services.registry.Service` in the registry; this module holds
what spans them: start/up/down in dependency order, their status, and the environment for
clients. MinIO's root credentials and the CouchDB-API server's admin are generated on the
first ``up`` and kept in 0600 files; they are printed only by :func:`env_exports` (meant for
``eval "$(owdedup services env)"``).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from owdedup.runtime import env as env_names
from owdedup.services import launcher
from owdedup.services.config import ServicesConfig
from owdedup.services.couchdb import couchdb_credentials
from owdedup.services.launcher import read_pid, stop
from owdedup.services.minio import minio_credentials
from owdedup.services.registry import check_names, install, service


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    ready: bool
    pid: int | None
    endpoint: str
    version: str
    log: Path

    @property
    def state(self) -> str:
        if self.running:
            return "running" if self.ready else "starting/unhealthy"
        return "stopped"


# All services -----------------------------------------------------------------------------


def start(config: ServicesConfig, name: str) -> int:
    """Start one service (installing it first if needed); returns its pid."""
    chosen = service(name)
    if not chosen.installed(config):
        chosen.install(config)
    return chosen.start(config)


def up(config: ServicesConfig, only: Iterable[str] | None = None) -> None:
    """Install what is missing and start the services (all by default) in the registry's
    order: couchdb, kafka, then minio (whose notification target is Kafka)."""
    names = check_names(only)
    install(config, names)
    for name in names:
        service(name).start(config)


def down(config: ServicesConfig, only: Iterable[str] | None = None) -> None:
    """Stop the services (all by default), MinIO first."""
    for name in reversed(check_names(only)):
        stop(config, name)


def status(config: ServicesConfig, name: str) -> ServiceStatus:
    chosen = service(name)
    pid = read_pid(config, name)
    return ServiceStatus(
        name=name,
        running=pid is not None,
        ready=pid is not None and chosen.ready(config),
        pid=pid,
        endpoint=chosen.endpoint(config),
        version=chosen.version(),
        log=config.log_file(name),
    )


def logs(config: ServicesConfig, name: str, lines: int = 50) -> str:
    """The last ``lines`` lines of service ``name``'s log file."""
    check_names([name])
    return launcher.logs(config, name, lines)


def status_all(config: ServicesConfig) -> list[ServiceStatus]:
    return [status(config, name) for name in check_names(None)]


# Environment for clients ------------------------------------------------------------------


def env_vars(config: ServicesConfig) -> dict[str, str]:
    """What owdedup's clients need to reach these services (includes the MinIO secret and
    the record server's admin, as the record-store options the runtime reads)."""
    access, secret = minio_credentials(config)
    records: dict[str, str] = {}
    if config.couchdb_credentials_file.exists():  # absent until couchdb was first started
        username, password = couchdb_credentials(config)
        records = {env_names.RECORDS_USERNAME: username, env_names.RECORDS_PASSWORD: password}
    return {
        env_names.STORE: config.store_url,
        env_names.STORE_ACCESS_KEY: access,
        env_names.STORE_SECRET_KEY: secret,
        env_names.RECORDS: config.records_url,
        **records,
        env_names.KAFKA: config.kafka_bootstrap,
        env_names.IN_BUCKET: config.in_bucket,
        env_names.OUT_BUCKET: config.out_bucket,
        env_names.KAFKA_TOPIC: config.topic,
    }


def env_exports(config: ServicesConfig) -> list[str]:
    """``export NAME=value`` lines for ``eval "$(owdedup services env)"``."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env_vars(config).items()]
