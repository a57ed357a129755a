"""Local services for development and tests: MinIO (S3 store with Kafka notifications),
a single-node Kafka broker and a CouchDB-API server, installed into a cache by the project's
own code (``go install``, ``mvn``, ``npm``) and run as background processes on 127.0.0.1.

Entry points: :func:`up`, :func:`down`, :func:`status_all`, :func:`env_exports`, and the
``services`` typer app in :mod:`owdedup.services.cli`.
"""

from __future__ import annotations

from owdedup.services.config import ServicesConfig
from owdedup.services.launcher import stop
from owdedup.services.processes import (
    ServiceStatus,
    down,
    env_exports,
    env_vars,
    logs,
    start,
    status,
    status_all,
    up,
)
from owdedup.services.registry import install, is_installed
from owdedup.services.tools import ServiceError

__all__ = [
    "ServiceError",
    "ServiceStatus",
    "ServicesConfig",
    "down",
    "env_exports",
    "env_vars",
    "install",
    "is_installed",
    "logs",
    "start",
    "status",
    "status_all",
    "stop",
    "up",
]
