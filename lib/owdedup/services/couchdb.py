"""The CouchDB-API service: pouchdb-server (CouchDB 1.x-style API) with its databases on
disk, run as a background process on 127.0.0.1 (see :mod:`owdedup.services.launcher`).
It is always pouchdb-server: a real Apache CouchDB on the PATH is neither detected nor used
(point ``OWDEDUP_RECORDS`` at one to use it instead).

Nobody writes records without credentials: an admin is generated on the first start (kept,
like MinIO's root, in a 0600 file; exported by ``owdedup services env`` as
``OWDEDUP_RECORDS_USERNAME``/``_PASSWORD``) and written into the server's config file, which
pouchdb-server reads at start and rewrites with the password hashed. With an admin, only
the admin creates databases; the record database is then made admin-only by its
``_security`` members (as CouchDB 3 makes every new database), so an anonymous write gets
401 instead of a forged record.

pouchdb-server 4.2.0 was not written for refusing requests: a refused database creation
crashed it, a refused deletion left it hanging; :mod:`owdedup.services.pouchdb_mends` mends
the installed copy before each start. It was also written for Node versions that only warned
about an unhandled promise rejection; since Node 15 one ends the process, and some refused
requests (``POST /_replicate`` by a non-admin) leave such rejections behind, so the server
runs with ``--unhandled-rejections=warn``, as those Node versions did.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from owdedup.runtime.atomic import private_dir, write_atomic
from owdedup.runtime.records.couchdb import DEFAULT_DATABASE
from owdedup.services.config import ServicesConfig
from owdedup.services.install import install_pouchdb, pouchdb_installed
from owdedup.services.launcher import (
    ProcessSpec,
    http_ok,
    launch,
    register_process,
    service_ports,
    stop,
)
from owdedup.services.pouchdb_mends import apply_mends
from owdedup.services.tools import ServiceError, generated_credentials, random_token, require
from owdedup.services.versions import POUCHDB_SERVER_VERSION

#: Not the package's own name: a credential must be findable (and so checked absent) in
#: output that names the package everywhere.
ADMIN_USER = "owdedup-admin"
#: Members by role ``_admin`` only: what CouchDB 3 gives a new database by default.
ADMIN_ONLY = {"admins": {"names": [], "roles": []}, "members": {"names": [], "roles": ["_admin"]}}


def couchdb_credentials(config: ServicesConfig, *, create: bool = False) -> tuple[str, str]:
    """The server admin's (username, password), generated once into a 0600 file."""
    data = generated_credentials(
        config.couchdb_credentials_file,
        lambda: {"username": ADMIN_USER, "password": random_token(40)},
        create=create, service="CouchDB",
    )
    return data["username"], data["password"]


def couchdb_ready(config: ServicesConfig) -> bool:
    return http_ok(config.records_url + "/")


def write_admin_config(path: Path, username: str, password: str) -> None:
    """Make *username* the only server admin in pouchdb-server's config file (kept: its
    other sections); the server hashes the password when it starts."""
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    config = current if isinstance(current, dict) else {}
    config["admins"] = {username: password}
    write_atomic(path, (json.dumps(config, indent=2) + "\n").encode())


def start_couchdb(config: ServicesConfig) -> int:
    require("node", "run pouchdb-server")
    apply_mends(config.pouchdb_dir)
    username, password = couchdb_credentials(config, create=True)
    private_dir(config.data_dir)
    workdir = private_dir(config.data_dir / "pouchdb-server")
    dbs = private_dir(config.data_dir / "couchdb")
    write_admin_config(workdir / "config.json", username, password)
    argv: list[str | Path] = [
        config.pouchdb_bin,
        "--host", config.host,
        "--port", str(config.couchdb_port),
        "--dir", dbs,
        "--config", workdir / "config.json",
    ]
    env = dict(os.environ)
    env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --unhandled-rejections=warn".strip()
    pid = launch(
        config, "couchdb", argv, env=env, cwd=workdir,
        ports=service_ports(config, "couchdb"), ready=lambda: couchdb_ready(config),
    )
    try:
        secure_database(config, DEFAULT_DATABASE)
    except ServiceError:
        stop(config, "couchdb", quiet=True)  # never left running with an open database
        raise
    return pid


def secure_database(config: ServicesConfig, database: str) -> None:
    """Create *database* if needed and make it admin-only (idempotent)."""
    base = f"{config.records_url}/{database}"
    status = _admin_request(config, "PUT", base, None)
    if status not in (201, 202, 412):
        raise ServiceError(f"couchdb: creating database {database} answered HTTP {status}")
    status = _admin_request(config, "PUT", f"{base}/_security", ADMIN_ONLY)
    if status not in (200, 201):
        raise ServiceError(f"couchdb: securing database {database} answered HTTP {status}")


def _admin_request(config: ServicesConfig, method: str, url: str, body: Any) -> int:
    username, password = couchdb_credentials(config)
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError as exc:
        raise ServiceError(f"couchdb: {method} {url} failed: {exc}") from None


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
