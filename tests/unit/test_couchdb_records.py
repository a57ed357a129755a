"""The CouchDB record store's pure parts: URLs, options, auth, documents, redaction.

No request is made here; tests/services/test_couchdb_records.py runs against a real server.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from owdedup.runtime.errors import ConfigError, StoreError
from owdedup.runtime.records import open_records
from owdedup.runtime.records.couch_transport import (
    CloudantTransport,
    CouchAuth,
    TransportError,
    Urllib3Transport,
    _cloudant,
    basic_authorization,
    build_authenticator,
    doc_path,
    select_auth,
    session_cookie,
    with_query,
)
from owdedup.runtime.records.couchdb import (
    COUNTS_PREFIX,
    DEFAULT_DATABASE,
    RECORD_PREFIX,
    CouchRecordStore,
    counts_doc,
    counts_id,
    doc_id,
    lease_from_doc,
    lease_id,
    parse_url,
    record_doc,
    record_from_doc,
)
from owdedup.runtime.registry import scrub
from tests.record_store_contract import make_record

SECRET = "hunter2-s3cret"


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


# -- the transports' pure parts ------------------------------------------------------------


def test_paths_quote_segments_but_keep_colons() -> None:
    key = doc_id("a1-b", "c2")
    assert doc_path("owdedup", key) == "/owdedup/rec:a1-b-c2"
    assert doc_path("a/b", "_all_docs") == "/a%2Fb/_all_docs"
    assert doc_path("x", "counts:thumb nail:0f") == "/x/counts:thumb%20nail:0f"
    assert doc_path("x", "odd/id?#%") == "/x/odd%2Fid%3F%23%25"
    assert doc_path("x") == "/x"
    assert with_query("/x/rec:a-b", {"rev": "1-abc"}) == "/x/rec:a-b?rev=1-abc"
    assert with_query("/x/rec:a-b", None) == "/x/rec:a-b"
    store = CouchRecordStore("http://127.0.0.1:5984", "a/b")
    assert store.path(key) == "/a%2Fb/rec:a1-b-c2"


def test_basic_authorization_header() -> None:
    assert basic_authorization("u", "p") == "Basic dTpw"
    header = basic_authorization("admin", "pässwörd:1")
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == "admin:pässwörd:1"


@pytest.mark.parametrize(
    ("set_cookie", "cookie"),
    [
        ("AuthSession=YWRtaW46NjY; Version=1; Path=/; HttpOnly", "AuthSession=YWRtaW46NjY"),
        ("other=1, AuthSession=abc-_=; Path=/", "AuthSession=abc-_="),
        ("AuthSession=; Path=/", None),
        ("other=1; Path=/", None),
        (None, None),
    ],
)
def test_session_cookie(set_cookie: str | None, cookie: str | None) -> None:
    assert session_cookie(set_cookie) == cookie


@pytest.mark.parametrize(
    ("options", "transport"),
    [
        ({}, "urllib3"),
        ({"username": "u", "password": "p"}, "urllib3"),
        ({"username": "u", "password": "p", "auth": "session"}, "urllib3"),
        ({"apikey": "k"}, "ibmcloudant"),
        ({"username": "u", "password": "p", "transport": "ibmcloudant"}, "ibmcloudant"),
        ({"transport": " URLLIB3 "}, "urllib3"),
    ],
)
def test_transport_selection(options: dict[str, str], transport: str) -> None:
    store = open_records("http://127.0.0.1:5984/x", options)
    assert isinstance(store, CouchRecordStore) and store.transport == transport


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"transport": "curl"}, "unknown CouchDB transport"),
        ({"apikey": "k", "transport": "urllib3"}, "needs the ibmcloudant transport"),
    ],
)
def test_transport_selection_rejects(options: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_records("http://127.0.0.1:5984/x", options)


def test_transport_repr_hides_secrets() -> None:
    auth = select_auth({"username": "admin", "password": SECRET})
    transport = Urllib3Transport("http://127.0.0.1:5984", auth, 1.0)
    assert SECRET not in repr(transport) and "basic" in repr(transport)


# -- error mapping, over a fake transport ---------------------------------------------------


class _FakeTransport:
    """Answers every request with *reply*, or raises it."""

    discard_after_failure = False

    def __init__(self, reply: tuple[int, Any] | Exception) -> None:
        self.reply = reply

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply

    def close(self) -> None:
        pass


def _store_answering(reply: tuple[int, Any] | Exception) -> CouchRecordStore:
    store = CouchRecordStore(
        "http://127.0.0.1:5984", "x", select_auth({"username": "admin", "password": SECRET})
    )
    store._transport_here()  # a real transport first, so the fake is the one kept for this pid
    store._transport = _FakeTransport(reply)
    return store


def test_transport_errors_name_the_endpoint_not_the_credentials() -> None:
    store = _store_answering(TransportError(f"[Errno 111] Connection refused {SECRET}"))
    with pytest.raises(StoreError) as info:
        store.get("f" * 64, "d" * 64)
    assert str(info.value) == (
        "cannot reach CouchDB at http://127.0.0.1:5984/x (lookup): [Errno 111] Connection "
        "refused ***"
    )
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_expected_statuses_come_back_without_a_body() -> None:
    store = _store_answering((404, {"error": "not_found", "reason": "missing"}))
    assert store.get("f" * 64, "d" * 64) is None
    assert store._request("x", "GET", "/x/y", expect=(404,)) == (404, None)



class _RecordingTransport(_FakeTransport):
    def __init__(self, reply: tuple[int, Any]) -> None:
        super().__init__(reply)
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        self.requests.append((method, path, kwargs.get("json")))
        return super().request(method, path, **kwargs)


def test_get_many_reads_the_primary_index_by_id_in_one_request() -> None:
    """Six sizes of one input: one ``_all_docs`` read with their ids (CouchDB's primary
    index, a B-tree by id), never a view, a Mango query or a range."""
    keys = [(f"{size:064x}", "d" * 64) for size in (16, 32, 64, 128, 256, 512)]
    stored = make_record(*keys[2])
    rows = [{"key": doc_id(*keys[2]), "id": doc_id(*keys[2]),
             "doc": {"_id": doc_id(*keys[2]), "_rev": "1-a", **record_doc(stored)}},
            {"key": doc_id(*keys[0]), "error": "not_found"}]
    store = _store_answering((200, {"rows": rows}))
    transport = _RecordingTransport((200, {"rows": rows}))
    store._transport = transport
    assert store.get_many(keys) == {keys[2]: stored}
    assert transport.requests == [("POST", "/x/_all_docs", {
        "keys": [doc_id(*key) for key in keys], "include_docs": True})]

def test_put_many_skips_conflicts_and_raises_for_other_refusals_after_every_batch() -> None:
    """CouchDB answers ``_bulk_docs`` with one row per document: ``ok``, or an ``error``;
    ``conflict`` means the id exists (left as it is, as put does), anything else is named."""
    rows = [{"ok": True, "id": "x", "rev": "1-a"},
            {"id": "y", "error": "conflict", "reason": "Document update conflict."},
            {"id": "z", "error": "forbidden", "reason": f"read-only for {SECRET}"}]
    store = _store_answering((201, rows))
    made = [make_record("a" * 64, f"{i:064x}") for i in range(6)]
    with pytest.raises(StoreError) as info:
        store.put_many(made, batch_size=3)  # two batches, each answered as above
    message = str(info.value)
    assert "refused 2 record(s)" in message and "(2 created)" in message
    for index in (2, 5):  # the third of each batch
        assert f"{doc_id('a' * 64, f'{index:064x}')}: forbidden read-only for ***" in message
    assert SECRET not in message
    assert _store_answering((201, rows[:2])).put_many(made[:2]) == 1


def test_put_many_refuses_a_reply_without_one_row_per_document() -> None:
    store = _store_answering((201, [{"ok": True}]))
    with pytest.raises(StoreError, match="not one result per document"):
        store.put_many([make_record(digest="1" * 64), make_record(digest="2" * 64)])
    with pytest.raises(StoreError, match="not one result per document"):
        _store_answering((201, {"ok": True})).put_many([make_record()])

def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_urllib3_connection_errors_are_short_and_unchained() -> None:
    port = _unused_port()
    store = open_records(
        f"http://127.0.0.1:{port}/x", {"username": "admin", "password": SECRET, "timeout": "2"}
    )
    with pytest.raises(StoreError) as info:
        store.get("f" * 64, "d" * 64)
    assert str(info.value) == (
        f"cannot reach CouchDB at http://127.0.0.1:{port}/x (lookup): "
        "[Errno 111] Connection refused"
    )
    assert info.value.__cause__ is None and info.value.__context__ is None


# -- the urllib3 transport against a tiny in-process server ---------------------------------


class _Couch(BaseHTTPRequestHandler):
    """Just enough CouchDB: a session login (``name`` / ``password`` form fields), Basic auth,
    and ``GET /x/<id>`` answering with the request it saw."""

    protocol_version = "HTTP/1.1"
    server: _CouchServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        cookie = self.headers.get("Cookie")
        if cookie is not None:
            return cookie == f"AuthSession={self.server.session}"
        authorization = self.headers.get("Authorization")
        if authorization is not None:
            return authorization == basic_authorization("admin", "right")
        return True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.server.seen.append(("POST", self.path, body))
        form = parse_qs(body)
        if self.path == "/_session" and form == {"name": ["admin"], "password": ["right"]}:
            self.server.session = f"s{len(self.server.seen)}"
            cookie = f"AuthSession={self.server.session}; Version=1; Path=/; HttpOnly"
            self._reply(200, {"ok": True}, {"Set-Cookie": cookie})
        else:
            self._reply(401, {"error": "unauthorized", "reason": "Name or password is incorrect."})

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.path, self.headers.get("Cookie") or ""))
        if not self._authorized():
            self._reply(401, {"error": "unauthorized", "reason": "You are not authorized."})
        else:
            self._reply(200, {"path": self.path, "accept": self.headers.get("Accept")})


class _CouchServer(ThreadingHTTPServer):
    session = ""
    seen: list[tuple[str, str, str]]


@pytest.fixture
def fake_couch() -> Iterator[_CouchServer]:
    server = _CouchServer(("127.0.0.1", 0), _Couch)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _transport(server: _CouchServer, **options: str) -> Urllib3Transport:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return Urllib3Transport(url, select_auth(options), 5.0)


def test_urllib3_basic_auth(fake_couch: _CouchServer) -> None:
    right = _transport(fake_couch, username="admin", password="right")
    path = doc_path("x", "rec:a-b")
    assert right.request("GET", path) == (200, {"path": "/x/rec:a-b", "accept": "application/json"})
    wrong = _transport(fake_couch, username="admin", password=SECRET)
    status, body = wrong.request("GET", path)
    assert status == 401 and SECRET not in json.dumps(body)


def test_urllib3_session_logs_in_once_and_reuses_the_cookie(fake_couch: _CouchServer) -> None:
    transport = _transport(fake_couch, username="admin", password="right", auth="session")
    for _ in range(3):
        assert transport.request("GET", "/x/rec:a-b")[0] == 200
    assert [(m, p) for m, p, _ in fake_couch.seen] == [("POST", "/_session")] + [
        ("GET", "/x/rec:a-b")
    ] * 3
    assert fake_couch.seen[0][2] == "name=admin&password=right"
    assert {cookie for m, _, cookie in fake_couch.seen if m == "GET"} == {"AuthSession=s1"}


def test_urllib3_session_logs_in_again_once_on_401(fake_couch: _CouchServer) -> None:
    transport = _transport(fake_couch, username="admin", password="right", auth="session")
    assert transport.request("GET", "/x/a")[0] == 200
    fake_couch.session = "expired"  # the server forgot the session
    assert transport.request("GET", "/x/a")[0] == 200
    assert [m for m, _, _ in fake_couch.seen] == ["POST", "GET", "GET", "POST", "GET"]


def test_urllib3_refused_session_login(fake_couch: _CouchServer) -> None:
    url = f"http://127.0.0.1:{fake_couch.server_address[1]}/x"
    store = open_records(url, {"username": "admin", "password": SECRET, "auth": "session"})
    for _ in range(2):  # no cookie kept, no waiting: every request tries to log in again
        with pytest.raises(StoreError, match="refused the session credentials") as info:
            store.get("f" * 64, "d" * 64)
        assert SECRET not in str(info.value)
        assert info.value.__cause__ is None and info.value.__context__ is None
    assert [m for m, _, _ in fake_couch.seen] == ["POST", "POST"]


# -- the ibmcloudant transport's error mapping -----------------------------------------------


class _FailingSdkClient:
    """Stands in for CloudantV1 in CloudantTransport: every request fails as the test says."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def prepare_request(self, *args: Any, **kwargs: Any) -> Any:
        return {}

    def send(self, request: Any) -> Any:
        raise self.error


def _sdk_store_failing_with(error: Exception) -> CouchRecordStore:
    store = open_records(
        "http://127.0.0.1:5984/x",
        {"username": "admin", "password": SECRET, "transport": "ibmcloudant"},
    )
    assert isinstance(store, CouchRecordStore)
    transport = store._transport_here()
    assert isinstance(transport, CloudantTransport)
    transport._client = _FailingSdkClient(error)
    return store


def _urllib3_store_answering(status: int, error: str, reason: str) -> CouchRecordStore:
    return _store_answering((status, {"error": error, "reason": reason}))


def _sdk_store_answering(status: int, error: str, reason: str) -> CouchRecordStore:
    api_exception: Any = _cloudant().ApiException
    return _sdk_store_failing_with(api_exception(status, message=reason))


#: An HTTP error status as each transport meets it: a (status, body) reply, an ApiException.
ANSWERING_WITH = pytest.mark.parametrize(
    "answering", [_urllib3_store_answering, _sdk_store_answering], ids=["urllib3", "ibmcloudant"]
)


@ANSWERING_WITH
def test_http_errors_name_the_endpoint_not_the_credentials(
    answering: Callable[[int, str, str], CouchRecordStore],
) -> None:
    store = answering(500, "x", f"internal error admin:{SECRET}")
    with pytest.raises(StoreError) as info:
        store.get("f" * 64, "d" * 64)
    message = str(info.value)
    assert "http://127.0.0.1:5984/x" in message and "HTTP 500" in message
    assert SECRET not in message
    # The SDK's exception holds the request (Authorization header): never chained on.
    assert info.value.__cause__ is None and info.value.__context__ is None


@ANSWERING_WITH
def test_refused_credentials_are_reported_as_such(
    answering: Callable[[int, str, str], CouchRecordStore],
) -> None:
    store = answering(401, "unauthorized", "Name or password is incorrect.")
    with pytest.raises(StoreError, match="refused the basic credentials"):
        store.get("f" * 64, "d" * 64)


def test_sdk_connection_errors_name_the_endpoint_not_the_credentials() -> None:
    from requests import ConnectionError as RequestsConnectionError

    error = RequestsConnectionError(
        f"HTTPConnectionPool(host='127.0.0.1', port=5984): Max retries exceeded with url: "
        f"/x/rec:1?pw={SECRET} (Caused by NewConnectionError('<conn>: Failed to establish a "
        f"new connection: [Errno 111] Connection refused'))"
    )
    store = _sdk_store_failing_with(error)
    with pytest.raises(StoreError) as info:
        store.get("f" * 64, "d" * 64)
    message = str(info.value)
    assert message == (
        "cannot reach CouchDB at http://127.0.0.1:5984/x (lookup): [Errno 111] Connection refused"
    )
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert store._transport is None  # a new SDK client (and token manager) next time


def test_first_request_over_urllib3_imports_no_sdk() -> None:
    code = (
        "import socket, sys\n"
        "from owdedup.runtime.errors import StoreError\n"
        "from owdedup.runtime.records import open_records\n"
        "sock = socket.socket(); sock.bind(('127.0.0.1', 0)); port = sock.getsockname()[1]\n"
        "sock.close()\n"
        "store = open_records(f'http://127.0.0.1:{port}/x', {'username': 'u', 'password': 'p'})\n"
        "try:\n"
        "    store.get('f', 'd')\n"
        "except StoreError:\n"
        "    pass\n"
        "heavy = ('ibmcloudant', 'ibm_cloud_sdk_core', 'requests')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_importing_the_backend_does_not_import_the_client() -> None:
    code = (
        "import sys\n"
        "from owdedup.runtime.records import open_records\n"
        "store = open_records('http://127.0.0.1:5984/x', {'username': 'u', 'password': 'p'})\n"
        "heavy = ('ibmcloudant', 'ibm_cloud_sdk_core', 'requests')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


class _ScriptedTransport:
    """Answers each request from a script of (method, status, body), in order."""

    discard_after_failure = False

    def __init__(self, script: list[tuple[str, int, Any]]) -> None:
        self.script = script
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, *, params: Any = None,
                json: Any = None) -> tuple[int, Any]:
        self.sent.append((method, path, json))
        expected, status, body = self.script.pop(0)
        assert method == expected
        return status, body

    def close(self) -> None:
        pass


def _store_scripted(script: list[tuple[str, int, Any]]) -> tuple[CouchRecordStore,
                                                                  _ScriptedTransport]:
    store = CouchRecordStore("http://127.0.0.1:1", "x")
    transport = _ScriptedTransport(script)
    store._transport, store._pid = transport, os.getpid()
    return store, transport


def _lease_doc(owner: str, rev: str) -> dict[str, Any]:
    return {"_id": lease_id("f" * 64, "d" * 64), "_rev": rev, "type": "lease",
            "function_id": "f" * 64, "input_digest": "d" * 64, "owner": owner,
            "expires_at": 2e9}


def test_a_202_claim_is_held_only_if_its_revision_is_the_one_read_back() -> None:
    """Cloudant answers 202 when fewer nodes than the quorum took the write; another node
    may have taken a rival claim. The claim is believed only if a read sees it win."""
    lost, transport = _store_scripted([
        ("PUT", 202, {"ok": True, "rev": "1-mine"}),
        ("GET", 200, _lease_doc("rival", "1-rival")),  # the winning revision is not ours
        ("GET", 200, _lease_doc("rival", "1-rival")),
    ])
    lease, mine = lost.claim("f" * 64, "d" * 64, "me", 2e9)
    assert not mine and lease.owner == "rival" and not transport.script
    won, transport = _store_scripted([
        ("PUT", 202, {"ok": True, "rev": "1-mine"}),
        ("GET", 200, _lease_doc("me", "1-mine")),
    ])
    lease, mine = won.claim("f" * 64, "d" * 64, "me", 2e9)
    assert mine and lease.revision == "1-mine" and not transport.script


@pytest.mark.parametrize("doc", [
    {"_rev": "1-x", "function_id": "f" * 64, "input_digest": "d" * 64, "owner": "o",
     "expires_at": "never"},
    {"_rev": "1-x", "function_id": "e" * 64, "input_digest": "d" * 64, "owner": "o",
     "expires_at": 2e9},
    {"_rev": "1-x", "function_id": "f" * 64, "input_digest": "d" * 64, "owner": 7,
     "expires_at": 2e9},
    {"_rev": "1-x", "function_id": "f" * 64, "input_digest": "d" * 64, "owner": "o",
     "expires_at": True},
])
def test_a_malformed_lease_document_reads_as_expired(doc: dict[str, Any]) -> None:
    """A stranger's document under a lease id never makes anyone wait: it can be taken over."""
    lease = lease_from_doc("f" * 64, "d" * 64, doc)
    assert lease.expired(0.0) and lease.owner == "" and lease.revision == "1-x"
