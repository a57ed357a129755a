"""The CouchDB record store against a real CouchDB-API server (``owdedup services up``).

Every test works in its own ``rectest-<random>`` database and deletes it afterwards.
Timing is not asserted here (see benchmarks); only behaviour.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.config import Settings
from owdedup.runtime.errors import StoreError
from owdedup.runtime.records import Record, open_records
from owdedup.runtime.records import couchdb as couch
from owdedup.runtime.records.couch_transport import Urllib3Transport, select_auth
from owdedup.runtime.records.couchdb import CouchRecordStore, doc_id
from tests.forged_records import check_a_forged_record_is_not_trusted
from tests.record_store_contract import (
    DIGEST,
    FID,
    RecordStoreContract,
    make_record,
    race_for_lease,
    race_to_put,
)
from tests.service_fixtures import Services

SECRET = "hunter2-s3cret"


#: The server's admin, as the services export it (both tiers have one).
_ADMIN: dict[str, str] = {}


@pytest.fixture(scope="module")
def couch_url(services: Services) -> str:
    """This session's CouchDB-API server."""
    _ADMIN.update(username=services.env["OWDEDUP_RECORDS_USERNAME"],
                  password=services.env["OWDEDUP_RECORDS_PASSWORD"])
    return services.env["OWDEDUP_RECORDS"].rstrip("/")


def _with_admin(options: dict[str, str]) -> dict[str, str]:
    return options if "username" in options else {**_ADMIN, **options}


def _open(url: str, database: str, **options: str) -> CouchRecordStore:
    store = open_records(f"{url}/{database}", _with_admin(options))
    assert isinstance(store, CouchRecordStore)
    return store


def _drop(store: CouchRecordStore) -> None:
    store._request("drop", "DELETE", store.path(), expect=(404,))
    store.close()


@pytest.fixture
def records(couch_url: str) -> Iterator[CouchRecordStore]:
    store = _open(couch_url, f"rectest-{uuid.uuid4().hex[:12]}")
    yield store
    _drop(store)


def raw_doc(store: CouchRecordStore, key: str) -> dict[str, Any]:
    _, doc = store._request("raw read", "GET", store.path(key))
    assert isinstance(doc, dict)
    return doc


def bulk_load(store: CouchRecordStore, count: int, fid: str = "f" * 64) -> list[Record]:
    """*count* records with digests 0..count-1 written by ``_bulk_docs`` (fast)."""
    made = [make_record(fid, f"{i:064x}", key=f"out/{i}.jpg") for i in range(count)]
    assert store.put_many(made, batch_size=2000) == count
    return made


def test_reads_of_a_missing_database_find_nothing_and_a_write_creates_it(
    records: CouchRecordStore,
) -> None:
    assert records.get("f" * 64, "d" * 64) is None
    assert records.get_many([("f" * 64, "d" * 64), ("f" * 64, "e" * 64)]) == {}
    assert records.stats() == []
    records.delete("f" * 64, "d" * 64)
    records.add_counts("thumbnail", hits=1)  # the first write creates the database
    assert [s.hits for s in records.stats()] == [1]


class TestCouchContract(RecordStoreContract):
    pass


def test_concurrent_claimants_in_processes_one_wins_then_one_takes_over(
    records: CouchRecordStore, couch_url: str,
) -> None:
    url, options = f"{couch_url}/{records.database}", _with_admin({})
    records._create_database()
    winner = race_for_lease(url, options, None)
    held = records.get_lease(FID, DIGEST)
    assert held is not None and held.owner == winner
    # the winner "was killed": its lease expires, and of 8 waiters exactly one takes it over
    expired = records.renew(held, time.time() - 1)
    assert expired is not None
    race_for_lease(url, options, expired)


@pytest.fixture(scope="module")
def couch_user(couch_url: str) -> tuple[str, str]:
    """A user to authenticate as: the admin of a real CouchDB, else a user the admin makes
    in pouchdb-server's ``_users``. Such a user may read and write documents but not create
    databases, so the tests below make theirs first."""
    if os.environ.get("OWDEDUP_COUCHDB_PASSWORD"):
        return os.environ.get("OWDEDUP_COUCHDB_USER", "owdedup"), os.environ[
            "OWDEDUP_COUCHDB_PASSWORD"
        ]
    name, password = f"rectest-{uuid.uuid4().hex[:8]}", f"pw:{uuid.uuid4().hex}-é"
    admin = CouchRecordStore(couch_url, "_users", select_auth(_with_admin({})))
    user: dict[str, Any] = {"_id": f"org.couchdb.user:{name}", "name": name, "password": password,
            "roles": [], "type": "user"}
    status, _ = admin._request("add user", "PUT", admin.path(user["_id"]), json=user)
    assert status in (201, 202)
    admin.close()
    return name, password


@pytest.fixture(params=["basic/urllib3", "session/urllib3", "basic/ibmcloudant"])
def authed_records(
    request: pytest.FixtureRequest, couch_url: str, couch_user: tuple[str, str]
) -> Iterator[CouchRecordStore]:
    """A store that authenticates (its database made first, see couch_user)."""
    auth, transport = request.param.split("/")
    database = f"rectest-{uuid.uuid4().hex[:12]}"
    maker = _open(couch_url, database)
    maker._create_database()
    username, password = couch_user
    store = _open(couch_url, database, username=username, password=password, auth=auth,
                  transport=transport)
    yield store
    store.close()
    _drop(maker)


class TestCouchContractAuthenticated(RecordStoreContract):
    @pytest.fixture
    def records(self, authed_records: CouchRecordStore) -> CouchRecordStore:
        return authed_records


class TestCouchContractSdkTransport(RecordStoreContract):
    """The ibmcloudant transport (IAM's, which cannot be tried here) on the same logic."""

    @pytest.fixture
    def records(self, couch_url: str) -> Iterator[CouchRecordStore]:
        store = _open(couch_url, f"rectest-{uuid.uuid4().hex[:12]}", transport="ibmcloudant")
        yield store
        _drop(store)


def test_authenticated_store_reads_writes_and_counts(authed_records: CouchRecordStore) -> None:
    records = authed_records
    assert records.auth.kind in ("basic", "session")
    made = [make_record("a" * 64, f"{i:064x}") for i in range(3)]
    assert records.put_many(made[:2]) == 2
    assert records.put(made[2]) == (made[2], True)
    assert set(records.get_many([(r.function_id, r.input_digest) for r in made])) == {
        (r.function_id, r.input_digest) for r in made
    }
    records.add_counts("thumbnail", hits=2)
    records.delete(made[0].function_id, made[0].input_digest)
    (stats,) = records.stats()
    assert (stats.records, stats.hits) == (2, 2)


def test_session_cookie_is_reused(
    couch_url: str, couch_user: tuple[str, str]
) -> None:
    database = f"rectest-{uuid.uuid4().hex[:12]}"
    maker = _open(couch_url, database)
    maker._create_database()
    username, password = couch_user
    store = _open(couch_url, database, username=username, password=password, auth="session")
    try:
        store.put(make_record())
        transport = store._transport_here()
        assert isinstance(transport, Urllib3Transport)
        cookie = transport._cookie
        assert cookie is not None and cookie.startswith("AuthSession=")
        assert store.get("f" * 64, "d" * 64) is not None
        assert transport._cookie == cookie  # no new login
        # (A new login on a 401 is tested in tests/unit: pouchdb-server, an admin party,
        # ignores a cookie it does not know instead of refusing it.)
    finally:
        store.close()
        _drop(maker)


def test_records_are_documents_with_deterministic_ids(records: CouchRecordStore) -> None:
    record = make_record()
    records.put(record)
    doc = raw_doc(records, doc_id(record.function_id, record.input_digest))
    assert doc["_id"] == "rec:" + record.record_id and doc["type"] == "record"


def test_counting_hits_never_rewrites_records(records: CouchRecordStore) -> None:
    record = make_record()
    records.put(record)
    before = raw_doc(records, doc_id(record.function_id, record.input_digest))
    for _ in range(5):
        records.add_counts("thumbnail", hits=1, saved_ms=10.0, saved_bytes=100)
    records.add_counts("thumbnail", misses=2)
    records.add_counts("thumbnail")  # nothing to count: nothing written
    after = raw_doc(records, doc_id(record.function_id, record.input_digest))
    assert before == after and before["_rev"].startswith("1-")
    (stats,) = records.stats()
    assert (stats.function, stats.records, stats.hits, stats.misses) == ("thumbnail", 1, 5, 2)
    assert stats.saved_ms == pytest.approx(50.0)
    assert stats.saved_bytes == 500
    assert stats.output_bytes == 123
    (counter,) = counter_docs(records)  # one document for this process, rewritten
    assert counter["_rev"].startswith("6-") and counter["hits"] == 5


def counter_docs(store: CouchRecordStore) -> list[dict[str, Any]]:
    _, result = store._request(
        "count docs", "POST", store.path("_all_docs"),
        json={"start_key": "counts:", "end_key": "counts:\ufff0", "include_docs": True},
    )
    return [row["doc"] for row in result["rows"]]


def test_each_process_keeps_its_own_counter_document_and_nothing_counts_twice(
    records: CouchRecordStore, couch_url: str
) -> None:
    records.add_counts("thumbnail", hits=2, saved_bytes=10)
    other = _open(couch_url, records.database)  # another process (container)
    other.add_counts("thumbnail", hits=1)
    other.add_counts("thumbnail", misses=1)
    assert len(counter_docs(records)) == 2

    # A write whose reply was lost: the server has it, this process still holds the old rev.
    (tally,) = records._tallies.values()
    records.add_counts("thumbnail", hits=3)
    records._tallies["thumbnail"] = tally  # as if that reply was lost: old totals, old rev
    # The count buffer kept the 3 and adds them again with 4 new ones: a 409 on the stale
    # rev, the rev re-read, the totals (2 + 3 + 4) written: the 3 count once.
    records.add_counts("thumbnail", hits=3 + 4)
    # Someone deleted the counter document: the next flush writes the totals anew.
    (mine,) = [doc for doc in counter_docs(records) if doc["_id"] == tally.doc_id]
    records._request("delete counter", "DELETE", records.path(mine["_id"]),
                     params={"rev": mine["_rev"]})
    records.add_counts("thumbnail", hits=1)

    (stats,) = records.stats()
    assert (stats.hits, stats.misses, stats.saved_bytes) == (2 + 3 + 4 + 1 + 1, 1, 10)
    assert len(counter_docs(records)) == 2
    other.close()


def test_stats_pages_through_records_and_counters(
    records: CouchRecordStore, couch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(couch, "PAGE_SIZE", 4)  # many pages, and a last page that is full
    made = [make_record("a" * 64, f"{i:064x}", function="thumbnail", size=10) for i in range(12)]
    made += [make_record("b" * 64, f"{i:064x}", function="resize", size=7) for i in range(5)]
    assert records.put_many(made) == 17
    for _ in range(9):  # nine processes: nine counter documents, over several pages
        writer = _open(couch_url, records.database)
        writer.add_counts("thumbnail", hits=1, saved_ms=1.5, saved_bytes=3)
        writer.close()
    records.add_counts("other", misses=1)
    stats = {s.function: s for s in records.stats()}
    assert sorted(stats) == ["other", "resize", "thumbnail"]
    assert (stats["thumbnail"].records, stats["thumbnail"].hits) == (12, 9)
    assert stats["thumbnail"].output_bytes == 120
    assert stats["thumbnail"].saved_ms == pytest.approx(13.5)
    assert (stats["resize"].records, stats["resize"].output_bytes) == (5, 35)
    assert (stats["other"].records, stats["other"].misses) == (0, 1)


def test_put_many_skips_existing_records(records: CouchRecordStore) -> None:
    records.put(make_record("a" * 64, f"{1:064x}", key="out/kept.jpg"))
    made = [make_record("a" * 64, f"{i:064x}") for i in range(3)]
    assert records.put_many(made) == 2
    kept = records.get("a" * 64, f"{1:064x}")
    assert kept is not None and kept.output.key == "out/kept.jpg"


def test_concurrent_writers_in_processes_store_one_record(
    records: CouchRecordStore, couch_url: str
) -> None:
    records.add_counts("setup", misses=1)  # create the database first
    winner = race_to_put(f"{couch_url}/{records.database}", _with_admin({}))
    stored = records.get("f" * 64, "d" * 64)
    assert stored is not None and stored.output.key == winner


def test_concurrent_first_writes_both_create_the_database(couch_url: str) -> None:
    database = f"rectest-{uuid.uuid4().hex[:12]}"
    stores = [_open(couch_url, database) for _ in range(4)]
    errors: list[StoreError] = []

    def write(store: CouchRecordStore, index: int) -> None:
        try:
            store.put(make_record("a" * 64, f"{index:064x}"))
        except StoreError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, i)) for i, s in enumerate(stores)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert stores[0].stats()[0].records == 4
    finally:
        _drop(stores[0])


@pytest.mark.parametrize("count", [1_000, 10_000])
def test_lookups_are_correct_at_scale(records: CouchRecordStore, count: int) -> None:
    """Lookups stay one request by id whatever the size (timing: benchmarks/)."""
    bulk_load(records, count)
    rng = random.Random(count)
    for _ in range(50):
        present = [("f" * 64, f"{rng.randrange(count):064x}") for _ in range(5)]
        absent = ("f" * 64, f"{count + rng.randrange(1000):064x}")
        found = records.get_many([*present, absent])
        assert set(found) == set(present)
        fid, digest = present[0]
        record = records.get(fid, digest)
        assert record is not None and record.output.key == f"out/{int(digest, 16)}.jpg"
    (stats,) = records.stats()
    assert stats.records == count and stats.output_bytes == 123 * count


@pytest.mark.parametrize("auth", ["basic", "session"])
def test_wrong_credentials_are_refused_without_echoing_them(couch_url: str, auth: str) -> None:
    store = _open(couch_url, "rectest-auth", username="admin", password=SECRET, auth=auth)
    for _ in range(2):  # a second try is refused again (how fast is the benchmarks' business)
        with pytest.raises(StoreError, match=f"refused the {auth} credentials") as info:
            store.get("f" * 64, "d" * 64)
        assert SECRET not in str(info.value) and SECRET not in repr(store)
        assert info.value.__context__ is None and info.value.__cause__ is None


def test_unreachable_server_names_the_endpoint_only() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = _open(
        f"http://127.0.0.1:{port}", "rectest-gone", username="admin", password=SECRET,
        timeout="2",
    )
    with pytest.raises(StoreError) as info:
        store.get("f" * 64, "d" * 64)
    assert f"127.0.0.1:{port}/rectest-gone" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.__context__ is None


# -- issue 8, item 2 -----------------------------------------------------------------------

def test_a_forged_record_in_couchdb_is_not_trusted(
    couch_url: str, tmp_path: Path
) -> None:
    database = f"rectest-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        store_url=f"file://{tmp_path / 'store'}", records_url=f"{couch_url}/{database}",
        records_options=tuple(sorted(_with_admin({}).items())),
    )
    try:
        check_a_forged_record_is_not_trusted(settings, tmp_path / "store")
    finally:
        _drop(_open(couch_url, database))
