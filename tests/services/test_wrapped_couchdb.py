"""``@dedup`` with the CouchDB record store of the real services (issue 10, item 6): results
are recorded and found there, and the credentials are in no record."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.context import ContextCache
from owdedup.runtime.records import open_records
from owdedup.runtime.records.couchdb import CouchRecordStore
from owdedup.runtime.wrapped.decorator import dedup
from tests.service_fixtures import Services


@pytest.fixture
def couch(services: Services) -> Iterator[dict[str, str]]:
    url = f"{services.env['OWDEDUP_RECORDS'].rstrip('/')}/wrapped-{uuid.uuid4().hex[:12]}"
    where = {"owdedup_records": url,
             "owdedup_records_username": services.env["OWDEDUP_RECORDS_USERNAME"],
             "owdedup_records_password": services.env["OWDEDUP_RECORDS_PASSWORD"]}
    yield where
    store = open_records(url, {"username": where["owdedup_records_username"],
                               "password": where["owdedup_records_password"]})
    assert isinstance(store, CouchRecordStore)
    store._request("drop", "DELETE", store.path(), expect=(404,))
    store.close()


def test_the_decorator_records_and_finds_results_in_couchdb(
    couch: dict[str, str], store_root: Path
) -> None:
    (store_root / "photos" / "a.jpg").write_bytes(b"same")
    (store_root / "photos" / "b.jpg").write_bytes(b"same")
    runs: list[dict[str, Any]] = []
    contexts = ContextCache()

    @dedup(function="measure", contexts=contexts)
    def main(params: dict[str, Any]) -> dict[str, Any]:
        runs.append(params)
        return {"size": len(params["key"]), "output": {"bucket": "photos", "key": "a.jpg"}}

    where = {**couch, "owdedup_store": f"file://{store_root}"}
    first = main({**where, "bucket": "photos", "key": "a.jpg"})
    second = main({**where, "bucket": "photos", "key": "b.jpg"})
    contexts.close()
    assert len(runs) == 1 and first["owdedup"]["hit"] is False
    assert second["owdedup"]["hit"] is True and second["size"] == first["size"]
    store = open_records(couch["owdedup_records"],
                         {"username": couch["owdedup_records_username"],
                          "password": couch["owdedup_records_password"]})
    _, rows = store._request(  # type: ignore[attr-defined]
        "scan", "POST", store.path("_all_docs"), json={"include_docs": True})  # type: ignore[attr-defined]
    text = json.dumps(rows)
    assert '"result"' in text and couch["owdedup_records_password"] not in text
    assert {s.function: (s.records, s.hits, s.misses) for s in store.stats()} == \
        {"measure": (1, 1, 1)}
    store.close()


def test_the_conductor_records_on_couchdb_while_its_lease_is_held_and_never_after(
    couch: dict[str, str], store_root: Path
) -> None:
    """The second activation records only while the lease in its state is held (checked by
    CouchDB's ``_rev``): the genuine call records, its replayed state does not."""
    from owdedup.runtime.wrapped.conductor import conductor_main

    (store_root / "photos" / "a.jpg").write_bytes(b"same")
    (store_root / "photos" / "b.jpg").write_bytes(b"same")
    bound = {**couch, "owdedup_store": f"file://{store_root}", "owdedup_action": "measure",
             "owdedup_version": "1"}
    env = {"__OW_NAMESPACE": "guest", "__OW_API_KEY": "u:" + "k" * 64,
           "__OW_ACTIVATION_ID": "a" * 32}
    contexts = ContextCache()
    try:
        first = conductor_main({**bound, "bucket": "photos", "key": "a.jpg"}, env, contexts)
        done = conductor_main({**bound, "size": 4, **first["state"]},
                              {**env, "__OW_ACTIVATION_ID": "b" * 32}, contexts)
        assert "record_error" not in done["params"]["owdedup"], done
        replayed = conductor_main({**bound, "size": 666, **first["state"]},
                                  {**env, "__OW_ACTIVATION_ID": "c" * 32}, contexts)
        assert "record_error" in replayed["params"]["owdedup"]
        hit = conductor_main({**bound, "bucket": "photos", "key": "b.jpg"},
                             {**env, "__OW_ACTIVATION_ID": "d" * 32}, contexts)
    finally:
        contexts.close()
    assert hit["params"]["size"] == 4 and hit["params"]["owdedup"]["hit"] is True
