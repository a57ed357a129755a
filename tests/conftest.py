"""Shared fixtures: every test gets its own folder store and SQLite record store; the real
services (one set per session) for the tiers that need them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from owdedup.actionloop.site import prepare_runtime_site
from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from tests.service_fixtures import (  # noqa: F401
    docker_compose_file,
    services,
    services_env,
)

# Registered here, at the root, so that every tier shares one session of the services (a
# conftest further down would start a second set for its own directory).

PROJECT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

#: Each test folder's tier markers: set here, by folder, and nowhere else. The integration
#: tier starts the services too (it deploys onto ``owdedup serve`` wired to them), so
#: ``-m "not services"`` leaves it out as well.
TIERS: dict[str, tuple[str, ...]] = {
    "unit": ("unit",),
    "functional": ("functional",),
    "serve": ("serve",),
    "deploy": ("deploy",),
    "services": ("services",),
    "integration": ("integration", "services"),
    "benchmarks": ("benchmarks",),
}
#: A test that asks for one of these starts the real services, wherever it lives.
SERVICE_FIXTURES = frozenset({"services", "services_env", "docker_compose_file"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.path).resolve().relative_to(TESTS).parts
        tiers = TIERS.get(parts[0]) if len(parts) > 1 else None
        if tiers is None:
            raise pytest.UsageError(f"{item.nodeid}: a test file belongs in a tier folder: "
                                    f"tests/{{{','.join(TIERS)}}}/")
        for tier in tiers:
            item.add_marker(tier)
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("services")


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "photos").mkdir(parents=True)
    (root / "thumbs").mkdir()
    return root


@pytest.fixture
def settings(store_root: Path, tmp_path: Path) -> Settings:
    return Settings(
        store_url=f"file://{store_root}",
        records_url=f"sqlite://{tmp_path / 'records.sqlite'}",
    )


@pytest.fixture
def context(settings: Settings) -> Iterator[Context]:
    ctx = Context(settings)
    yield ctx
    ctx.close()


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """Environment that points the manifest's package inputs at this test's stores."""
    return {
        "OWDEDUP_STORE": settings.store_url,
        "OWDEDUP_RECORDS": settings.records_url,
        "OWDEDUP_OUT_BUCKET": "thumbs",
    }


@pytest.fixture(scope="session")
def runtime_site() -> Path:
    """The runtime image's packages for every tier that runs actions as the Python runtime
    does: what ``owdedup serve`` uses by default, prepared (once, into the cache) here."""
    return prepare_runtime_site()
