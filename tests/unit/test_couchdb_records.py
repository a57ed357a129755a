"""The CouchDB record store's pure parts: URLs, options, auth, documents, redaction.

No request is made here; tests/services/test_couchdb_records.py runs against a real server.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from owdedup.errors import ConfigError, StoreError
from owdedup.records import OutputRef, Record, open_records
from owdedup.records.couchdb import (
    COUNTS_PREFIX,
    DEFAULT_DATABASE,
    RECORD_PREFIX,
    CouchAuth,
    CouchRecordStore,
    _sdk,
    build_authenticator,
    counts_doc,
    counts_id,
    doc_id,
    parse_url,
    record_doc,
    record_from_doc,
    scrub,
    select_auth,
)

SECRET = "hunter2-s3cret"


def make_record(fid: str = "f" * 64, digest: str = "d" * 64) -> Record:
    return Record(
        function="thumbnail", function_id=fid, input_digest=digest,
        output=OutputRef("thumbs", "out/1.jpg", 123, 64, 48), params={"size": 64},
        compute_ms=12.5, input_bytes=4096, created="2026-01-01T00:00:00+00:00",
    )


@pytest.mark.parametrize(
    ("url", "service", "database"),
    [
        ("http://127.0.0.1:5984", "http://127.0.0.1:5984", DEFAULT_DATABASE),
        ("http://127.0.0.1:5984/", "http://127.0.0.1:5984", DEFAULT_DATABASE),
        ("http://127.0.0.1:5984/records", "http://127.0.0.1:5984", "records"),
        ("couchdb://db.local:5984/r-1", "http://db.local:5984", "r-1"),
        ("cloudant://acct.cloudant.com/owd", "https://acct.cloudant.com", "owd"),
        ("https://Acct.Example.com/a%2Fb", "https://acct.example.com", "a/b"),
        ("http://[::1]:5984/x", "http://[::1]:5984", "x"),
    ],
)
def test_parse_url(url: str, service: str, database: str) -> None:
    assert parse_url(url) == (service, database)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://:5984/x", "needs a host"),
        ("http://host:5984/a/b", "at most one database"),
        ("http://host:5984/Records", "not a CouchDB database name"),
        ("http://host:5984/_users", "not a CouchDB database name"),
        ("http://host:5984/x?timeout=3", "no query"),
        ("http://host:port/x", "bad port"),
        ("ftp://host/x", "not a CouchDB URL"),
    ],
)
def test_parse_url_rejects(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_url(url)


def test_credentials_in_the_url_are_refused_and_not_echoed() -> None:
    with pytest.raises(ConfigError, match="records_username") as info:
        open_records(f"http://admin:{SECRET}@127.0.0.1:5984/x")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("scheme", ["http", "https", "couchdb", "cloudant"])
def test_schemes_are_registered(scheme: str) -> None:
    store = open_records(f"{scheme}://127.0.0.1:5984/x")
    assert isinstance(store, CouchRecordStore)
    assert store.describe().endswith("://127.0.0.1:5984/x")


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        ({}, "none"),
        ({"username": "u", "password": "p"}, "basic"),
        ({"username": "u", "password": "p", "auth": "session"}, "session"),
        ({"username": "u", "password": "p", "auth": "BASIC"}, "basic"),
        ({"apikey": "k"}, "iam"),
        ({"apikey": "k", "username": "u", "password": "p", "auth": "iam"}, "iam"),
        ({"username": "u", "password": "p", "auth": "none"}, "none"),
        ({"timeout": "3", "unrelated": "x"}, "none"),
    ],
)
def test_auth_selection(options: dict[str, str], kind: str) -> None:
    assert select_auth(options).kind == kind


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"username": "u"}, "needs both"),
        ({"password": "p"}, "needs both"),
        ({"auth": "session", "username": "u"}, "needs both"),
        ({"auth": "iam"}, "needs records_apikey"),
        ({"auth": "kerberos"}, "unknown CouchDB auth"),
        ({"apikey": "k", "username": "u", "password": "p"}, "choose one"),
    ],
)
def test_auth_selection_rejects(options: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        select_auth(options)


def test_auth_repr_hides_secrets() -> None:
    auth = select_auth({"username": "admin", "password": SECRET})
    assert SECRET not in repr(auth)
    store = CouchRecordStore("http://127.0.0.1:5984", "x", auth)
    assert SECRET not in repr(store) and SECRET not in store.describe()
    iam = select_auth({"apikey": SECRET})
    assert SECRET not in repr(iam)


@pytest.mark.parametrize(
    ("auth", "class_name"),
    [
        (CouchAuth(), "NoAuthAuthenticator"),
        (CouchAuth("basic", username="u", password="p"), "BasicAuthenticator"),
        (CouchAuth("session", username="u", password="p"), "CouchDbSessionAuthenticator"),
        (CouchAuth("iam", apikey="k"), "IAMAuthenticator"),
    ],
)
def test_build_authenticator(auth: CouchAuth, class_name: str) -> None:
    assert type(build_authenticator(auth)).__name__ == class_name


def test_authenticator_refusal_does_not_echo_or_chain_the_secret() -> None:
    # The SDK refuses secrets wrapped in quotes or braces.
    bad = '"' + SECRET + '"'
    with pytest.raises(ConfigError) as info:
        build_authenticator(CouchAuth("basic", username="u", password=bad))
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_options_reach_the_store() -> None:
    store = open_records(
        "couchdb://127.0.0.1:5984/x", {"username": "u", "password": "p", "timeout": "2.5"}
    )
    assert isinstance(store, CouchRecordStore)
    assert (store.auth.kind, store.timeout_s) == ("basic", 2.5)
    with pytest.raises(ConfigError, match="seconds"):
        open_records("couchdb://127.0.0.1:5984/x", {"timeout": "soon"})


def test_record_document_round_trip() -> None:
    record = make_record()
    doc = record_doc(record)
    assert doc["type"] == "record"
    assert not any(name.startswith("_") for name in doc)  # reserved by CouchDB
    stored = {**doc, "_id": doc_id(record.function_id, record.input_digest), "_rev": "1-abc"}
    assert record_from_doc(stored) == record


def test_malformed_document_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="malformed record"):
        record_from_doc({"_id": "rec:x", "function": "thumbnail"})


def test_ids_are_deterministic_and_prefixed() -> None:
    assert doc_id("a" * 4, "b" * 4) == f"{RECORD_PREFIX}aaaa-bbbb"
    assert doc_id("a", "b") == doc_id("a", "b")
    first, second = counts_id("thumbnail"), counts_id("thumbnail")
    assert first != second
    assert first.startswith(f"{COUNTS_PREFIX}thumbnail:")
    # Record and counter ids never fall into each other's _all_docs range.
    assert not first.startswith(RECORD_PREFIX) and not doc_id("a", "b").startswith(COUNTS_PREFIX)


def test_counts_document() -> None:
    doc = counts_doc("thumbnail", hits=1, misses=0, saved_ms=2.5, saved_bytes=10, at=1.0)
    assert doc == {
        "type": "counts", "function": "thumbnail", "hits": 1, "misses": 0, "saved_ms": 2.5,
        "saved_bytes": 10, "at": 1.0,
    }


def test_scrub() -> None:
    assert scrub(f"user admin pass {SECRET}!", ["admin", SECRET, ""]) == "user *** pass ***!"


class _FakeClient:
    """Stands in for CloudantV1: every call fails the way the test says."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_document(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def _store_failing_with(error: Exception) -> CouchRecordStore:
    store = CouchRecordStore(
        "http://127.0.0.1:5984", "x", select_auth({"username": "admin", "password": SECRET})
    )
    store._client_here()  # a real client first, so the fake is the one kept for this pid
    store._client = _FakeClient(error)
    return store


def test_http_errors_name_the_endpoint_not_the_credentials() -> None:
    api_exception: Any = _sdk().ApiException
    error = api_exception(500, message=f"internal error for admin:{SECRET}")
    store = _store_failing_with(error)
    with pytest.raises(StoreError) as info:
        store.get("f" * 64, "d" * 64)
    message = str(info.value)
    assert "http://127.0.0.1:5984/x" in message and "HTTP 500" in message
    assert SECRET not in message
    # The SDK's exception holds the request (Authorization header): never chained on.
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_refused_credentials_are_reported_as_such() -> None:
    api_exception: Any = _sdk().ApiException
    store = _store_failing_with(api_exception(401, message="Name or password is incorrect."))
    with pytest.raises(StoreError, match="refused the basic credentials"):
        store.get("f" * 64, "d" * 64)


def test_connection_errors_name_the_endpoint_not_the_credentials() -> None:
    from requests import ConnectionError as RequestsConnectionError

    error = RequestsConnectionError(
        f"HTTPConnectionPool(host='127.0.0.1', port=5984): Max retries exceeded with url: "
        f"/x/rec:1?pw={SECRET} (Caused by NewConnectionError('<conn>: Failed to establish a "
        f"new connection: [Errno 111] Connection refused'))"
    )
    store = _store_failing_with(error)
    with pytest.raises(StoreError) as info:
        store.get("f" * 64, "d" * 64)
    message = str(info.value)
    assert message == (
        "cannot reach CouchDB at http://127.0.0.1:5984/x (lookup): [Errno 111] Connection refused"
    )
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_importing_the_backend_does_not_import_the_client() -> None:
    code = (
        "import sys\n"
        "from owdedup.records import open_records\n"
        "store = open_records('http://127.0.0.1:5984/x', {'username': 'u', 'password': 'p'})\n"
        "heavy = ('ibmcloudant', 'ibm_cloud_sdk_core', 'requests')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
