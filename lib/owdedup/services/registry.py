"""The local services behind one protocol, registered by name in start order.

Each service is a module (:mod:`~owdedup.services.couchdb`, :mod:`~owdedup.services.kafka`,
:mod:`~owdedup.services.minio`) whose ``SERVICE`` object implements :class:`Service`: how it
is installed (``mc`` comes with ``minio``, which uses it to set up its buckets), started and
checked, where it answers and which version it is. ``owdedup services up|down|status|logs|
env|install`` (:mod:`owdedup.services.processes`) only go through this registry; a new
service is one module with a ``SERVICE`` and one line in :data:`REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from owdedup.services import couchdb, kafka, minio
from owdedup.services.config import ServicesConfig
from owdedup.services.tools import ServiceError


class Service(Protocol):
    @property
    def name(self) -> str: ...

    def install(self, config: ServicesConfig) -> list[str]:
        """Install what is missing; the names of the steps that ran (none: all there)."""
        ...

    def installed(self, config: ServicesConfig) -> bool: ...

    def start(self, config: ServicesConfig) -> int:
        """Start it in the background (a running one is left alone) until ready; its pid."""
        ...

    def ready(self, config: ServicesConfig) -> bool:
        """Does it answer (one quick probe)?"""
        ...

    def endpoint(self, config: ServicesConfig) -> str: ...

    def version(self) -> str: ...


#: Start order: the CouchDB-API server, Kafka, then MinIO (whose notification target is
#: Kafka). Stopping goes the other way.
REGISTRY: tuple[Service, ...] = (couchdb.SERVICE, kafka.SERVICE, minio.SERVICE)
SERVICES: tuple[str, ...] = tuple(service.name for service in REGISTRY)


def check_names(names: Iterable[str] | None) -> list[str]:
    """The requested service names in start order (all when ``names`` is empty)."""
    wanted = list(names or ())
    unknown = [name for name in wanted if name not in SERVICES]
    if unknown:
        raise ServiceError(
            f"unknown service {', '.join(unknown)}; choose from {', '.join(SERVICES)}"
        )
    return [name for name in SERVICES if not wanted or name in wanted]


def service(name: str) -> Service:
    check_names([name])
    return REGISTRY[SERVICES.index(name)]


def install(config: ServicesConfig, only: Iterable[str] | None = None) -> list[str]:
    """Install the named services (all by default); returns the install steps that ran."""
    return [step for name in check_names(only) for step in service(name).install(config)]


def is_installed(config: ServicesConfig, name: str) -> bool:
    return service(name).installed(config)
