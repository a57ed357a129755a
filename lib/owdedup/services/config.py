"""Where the local services live and which ports, buckets and topic they use.

Installs (binaries, jars, node modules) go under ``home`` (``OWDEDUP_SERVICES_HOME``, default
``~/.cache/owdedup/services``). Run state (pid and log files in ``run/``, data in ``data/``,
generated credentials) goes under ``state`` (``OWDEDUP_SERVICES_STATE``, default ``home``),
so tests can share one install and still keep their data apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from owdedup.runtime import env as env_names
from owdedup.runtime.errors import ConfigError
from owdedup.services.versions import KAFKA_VERSION, POUCHDB_SERVER_VERSION

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")

ENV_HOME = "OWDEDUP_SERVICES_HOME"
ENV_STATE = "OWDEDUP_SERVICES_STATE"

#: Environment variables that override the defaults below (name -> field).
_PORT_ENV: dict[str, str] = {
    "OWDEDUP_MINIO_PORT": "minio_port",
    "OWDEDUP_MINIO_CONSOLE_PORT": "minio_console_port",
    "OWDEDUP_KAFKA_PORT": "kafka_port",
    "OWDEDUP_KAFKA_CONTROLLER_PORT": "kafka_controller_port",
    "OWDEDUP_COUCHDB_PORT": "couchdb_port",
}
_NAME_ENV: dict[str, str] = {
    env_names.IN_BUCKET: "in_bucket",
    env_names.OUT_BUCKET: "out_bucket",
    env_names.KAFKA_TOPIC: "topic",
}


def cache_home(sub: str, variable: str, environ: Mapping[str, str] | None = None) -> Path:
    """The project's cache folder for *sub*: ``$variable`` when set, else
    ``$XDG_CACHE_HOME/owdedup/<sub>`` (``~/.cache/owdedup/<sub>`` without it). Shared by the
    services' installs and the deploy build's cache (:mod:`owdedup.deploy.build`)."""
    env = os.environ if environ is None else environ
    if env.get(variable):
        return Path(env[variable]).expanduser()
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "owdedup" / sub


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    return cache_home("services", ENV_HOME, environ)


@dataclass(frozen=True)
class ServicesConfig:
    home: Path
    state: Path
    host: str = "127.0.0.1"
    minio_port: int = 9000
    minio_console_port: int = 9001
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    couchdb_port: int = 5984
    #: S3 bucket names need 3 to 63 characters, so not "in"/"out" (as in the README).
    in_bucket: str = "inbucket"
    out_bucket: str = "outbucket"
    topic: str = "owdedup-uploads"
    #: MinIO notification target id: the bucket subscription names arn:minio:sqs::<ID>:kafka.
    kafka_target_id: str = "OWDEDUP"
    #: The ``mc`` alias (passed as MC_HOST_<alias>, never written to an mc config file).
    mc_alias: str = "owdedup"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServicesConfig:
        env = os.environ if environ is None else environ
        home = default_home(env)
        state = Path(env[ENV_STATE]).expanduser() if env.get(ENV_STATE) else home
        config = cls(home=home, state=state)
        changes: dict[str, object] = {}
        for var, name in _PORT_ENV.items():
            if env.get(var):
                try:
                    changes[name] = int(env[var])
                except ValueError:
                    raise ConfigError(f"{var} must be a port number, not {env[var]!r}") from None
        for var, name in _NAME_ENV.items():
            if env.get(var):
                changes[name] = env[var]
        return replace(config, **changes)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        for bucket in (self.in_bucket, self.out_bucket):
            if not _BUCKET.fullmatch(bucket):
                raise ConfigError(
                    f"bucket name {bucket!r} is not a valid S3 bucket name "
                    "(3-63 lowercase letters, digits, '.' or '-')"
                )
        if not _TOPIC.fullmatch(self.topic):
            raise ConfigError(f"Kafka topic name {self.topic!r} is not valid")

    # Installs -------------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        return self.home / "bin"

    @property
    def minio_bin(self) -> Path:
        return self.bin_dir / "minio"

    @property
    def mc_bin(self) -> Path:
        return self.bin_dir / "mc"

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka" / KAFKA_VERSION

    @property
    def kafka_libs(self) -> Path:
        return self.kafka_dir / "libs"

    @property
    def pouchdb_dir(self) -> Path:
        return self.home / "pouchdb" / POUCHDB_SERVER_VERSION

    @property
    def pouchdb_bin(self) -> Path:
        return self.pouchdb_dir / "node_modules" / ".bin" / "pouchdb-server"

    # Run state ------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.state / "run"

    @property
    def data_dir(self) -> Path:
        return self.state / "data"

    @property
    def credentials_file(self) -> Path:
        return self.state / "minio-credentials"

    @property
    def couchdb_credentials_file(self) -> Path:
        """The CouchDB-API server's admin (0600, like MinIO's)."""
        return self.state / "couchdb-credentials"

    @property
    def mc_config_dir(self) -> Path:
        return self.state / "mc"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.log"

    # Endpoints ------------------------------------------------------------------------
    @property
    def store_url(self) -> str:
        return f"http://{self.host}:{self.minio_port}"

    @property
    def records_url(self) -> str:
        return f"http://{self.host}:{self.couchdb_port}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def kafka_target_arn(self) -> str:
        return f"arn:minio:sqs::{self.kafka_target_id}:kafka"
