"""Shared fixtures: every test gets its own folder store and SQLite record store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from owdedup.config import Settings
from owdedup.context import Context

PROJECT = Path(__file__).resolve().parents[1]


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
