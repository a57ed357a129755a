"""The CouchDB-API service: pouchdb-server (CouchDB 1.x-style API) with its databases on
disk, run as a background process on 127.0.0.1 (see :mod:`owdedup.services.launcher`).
It is always pouchdb-server: a real Apache CouchDB on the PATH is neither detected nor used
(point ``OWDEDUP_RECORDS`` at one to use it instead).
"""

from __future__ import annotations

import os
from pathlib import Path

from owdedup.services.config import ServicesConfig
from owdedup.services.install import install_pouchdb, pouchdb_installed
from owdedup.services.launcher import (
    ProcessSpec,
    http_ok,
    launch,
    register_process,
    service_ports,
)
from owdedup.services.tools import require
from owdedup.services.versions import POUCHDB_SERVER_VERSION


def couchdb_ready(config: ServicesConfig) -> bool:
    return http_ok(config.records_url + "/")


def start_couchdb(config: ServicesConfig) -> int:
    require("node", "run pouchdb-server")
    workdir = config.data_dir / "pouchdb-server"
    dbs = config.data_dir / "couchdb"
    dbs.mkdir(parents=True, exist_ok=True)
    argv: list[str | Path] = [
        config.pouchdb_bin,
        "--host", config.host,
        "--port", str(config.couchdb_port),
        "--dir", dbs,
        "--config", workdir / "config.json",
    ]
    return launch(
        config, "couchdb", argv, env=dict(os.environ), cwd=workdir,
        ports=service_ports(config, "couchdb"), ready=lambda: couchdb_ready(config),
    )


class CouchDB:
    """pouchdb-server as a :class:`owdedup.services.registry.Service`."""

    name = "couchdb"

    def install(self, config: ServicesConfig) -> list[str]:
        return ["pouchdb"] if install_pouchdb(config) else []

    def installed(self, config: ServicesConfig) -> bool:
        return pouchdb_installed(config)

    def start(self, config: ServicesConfig) -> int:
        return start_couchdb(config)

    def ready(self, config: ServicesConfig) -> bool:
        return couchdb_ready(config)

    def endpoint(self, config: ServicesConfig) -> str:
        return config.records_url

    def version(self) -> str:
        return f"pouchdb-server {POUCHDB_SERVER_VERSION}"


SERVICE = CouchDB()
register_process("couchdb", ProcessSpec("pouchdb-server", lambda config: (config.couchdb_port,)))
