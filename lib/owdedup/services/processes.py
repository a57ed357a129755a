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

This module holds what spans them: start/up/down in dependency order, their status, and the
environment for clients. MinIO's root credentials and the CouchDB-API server's admin are
generated on the first ``up`` and kept in 0600 files; they are printed only by
:func:`env_exports` (meant for ``eval "$(owdedup services env)"``).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from owdedup.runtime import env as env_names
from owdedup.services.config import ServicesConfig
from owdedup.services.couchdb import couchdb_credentials, couchdb_ready, start_couchdb
from owdedup.services.install import (
    SERVICES,
    _pseudo_version_stamp,
    check_names,
    install,
    is_installed,
)
from owdedup.services.kafka import kafka_ready, start_kafka
from owdedup.services.launcher import read_pid, stop
from owdedup.services.minio import minio_credentials, minio_ready, start_minio
from owdedup.services.versions import KAFKA_VERSION, MINIO_VERSION, POUCHDB_SERVER_VERSION


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

STARTERS: dict[str, Callable[[ServicesConfig], int]] = {
    "couchdb": start_couchdb,
    "kafka": start_kafka,
    "minio": start_minio,
}


def start(config: ServicesConfig, name: str) -> int:
    """Start one service (installing it first if needed); returns its pid."""
    check_names([name])
    if not is_installed(config, name):
        install(config, [name])
    return STARTERS[name](config)


def up(config: ServicesConfig, only: Iterable[str] | None = None) -> None:
    """Install what is missing and start the services (all by default) in dependency order:
    couchdb, kafka, then minio (whose notification target is Kafka)."""
    names = check_names(only)
    install(config, names)
    for name in names:
        STARTERS[name](config)


def down(config: ServicesConfig, only: Iterable[str] | None = None) -> None:
    """Stop the services (all by default), MinIO first."""
    for name in reversed(check_names(only)):
        stop(config, name)


def _endpoint(config: ServicesConfig, name: str) -> str:
    return {
        "couchdb": config.records_url,
        "kafka": config.kafka_bootstrap,
        "minio": f"{config.store_url} (console :{config.minio_console_port})",
    }[name]


def _version(name: str) -> str:
    return {
        "couchdb": f"pouchdb-server {POUCHDB_SERVER_VERSION}",
        "kafka": f"kafka {KAFKA_VERSION}",
        "minio": f"minio {_pseudo_label(MINIO_VERSION)}",
    }[name]


def _pseudo_label(version: str) -> str:
    """``v0.0.0-20260212201848-7aac2a2c5b7c`` -> ``2026-02-12 7aac2a2c5b7c`` (a version that
    is not a pseudo-version is shown as it is)."""
    try:
        commit, date = _pseudo_version_stamp(version)
    except ValueError:
        return version
    return f"{date[:10]} {commit}"


def _ready(config: ServicesConfig, name: str) -> bool:
    if name == "couchdb":
        return couchdb_ready(config)
    if name == "kafka":
        return kafka_ready(config)
    return minio_ready(config)


def status(config: ServicesConfig, name: str) -> ServiceStatus:
    check_names([name])
    pid = read_pid(config, name)
    return ServiceStatus(
        name=name,
        running=pid is not None,
        ready=pid is not None and _ready(config, name),
        pid=pid,
        endpoint=_endpoint(config, name),
        version=_version(name),
        log=config.log_file(name),
    )


def status_all(config: ServicesConfig) -> list[ServiceStatus]:
    return [status(config, name) for name in SERVICES]


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
