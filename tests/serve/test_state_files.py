"""``owdedup serve --state DIR`` keeps bound parameters (credentials among them) on disk:
only this user may read them (issue 8, item 13)."""

from __future__ import annotations

import json
from pathlib import Path

from owdedup.serve.catalog import ServeCatalog

SECRET = "s3cret-bound-parameter"


def test_the_state_folder_is_0700_and_catalog_json_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    catalog = ServeCatalog(state_dir=state)
    catalog.put_package("p", {"parameters": [{"key": "store_secret_key", "value": SECRET}]},
                         overwrite=False)
    catalog_file = state / "catalog.json"
    assert SECRET in catalog_file.read_text()  # what is protected below
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "code").stat().st_mode & 0o777 == 0o700
    assert catalog_file.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in state.iterdir()) == ["catalog.json", "code"]  # no temp left


def test_an_existing_state_folder_and_file_are_made_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    (state / "catalog.json").write_text(json.dumps({}))
    (state / "catalog.json").chmod(0o644)
    catalog = ServeCatalog(state_dir=state)
    assert state.stat().st_mode & 0o777 == 0o700
    catalog.put_package("p", {}, overwrite=False)
    assert (state / "catalog.json").stat().st_mode & 0o777 == 0o600
