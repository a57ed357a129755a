"""CouchDB 3 / Cloudant record store: one document per record, read and written by its id.

Layout of the database (``owdedup`` unless the URL names another)::

    rec:<function_id>-<input_digest>   one record: Record.to_dict() plus "type": "record"
    counts:<function>:<random hex>     one lookup's counters: hits, misses, saved_ms, ...

Why this shape:

* A lookup is one ``GET /db/rec:...`` (several sizes: one ``POST /db/_all_docs`` with
  ``keys``). Only the primary index is used on the hot path, never a design document, view
  or Mango index: those are brought up to date when read, so the first lookup after a burst
  of writes would pay for indexing them.
* Insert-if-absent comes free with deterministic ids: a ``PUT`` without ``_rev`` of an id
  that exists is refused with 409, so two concurrent writers meet on the id and the loser
  returns the winner's record. (On a clustered CouchDB or Cloudant, writers that reach
  different nodes can both be accepted, leaving one conflicted document; every reader still
  sees the same winning revision, and both named the same deterministic output.)
* Counting a lookup writes a new small document instead of updating a counter: no 409s, no
  read-modify-write, and a hot record's revision never changes. ``stats()`` adds the
  counters and records up with ``_all_docs`` range scans over the two id prefixes, a page of
  ``PAGE_SIZE`` documents at a time, so it never holds more than one page.
* The database is created by the first write that finds it missing (404), instead of by an
  extra request on start-up that every cold action would pay for; a concurrent creator's
  412 is fine. Reads of a missing database simply find nothing.

Import cost: ``ibmcloudant`` and the ``requests`` stack under it take 100-150 ms to import
(and building the client loads the CA bundle, ~20 ms), so that happens on the first request,
not with this module: an action that never reaches the record store does not pay for it.

Credentials come only from options: ``username`` and ``password`` (HTTP Basic, or a cookie
session with ``auth=session``; pouchdb-server refuses the SDK's session login, CouchDB 3
accepts it), ``apikey`` (IBM Cloud IAM, for Cloudant), or none. A URL
with ``user:password@`` is refused. The client's exceptions carry the HTTP request, with its
Authorization header, so they are never chained onto ours: errors name the endpoint, the
operation and the HTTP status only.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from owdedup.errors import ConfigError, StoreError
from owdedup.records.base import FunctionStats, Record, RecordStore, record_id
from owdedup.registry import redact_url

DEFAULT_DATABASE = "owdedup"
RECORD_PREFIX = "rec:"
COUNTS_PREFIX = "counts:"
#: Documents per ``_all_docs`` page in ``stats()``.
PAGE_SIZE = 1000
DEFAULT_TIMEOUT_S = 10.0
#: Sorts after every character an id here contains: ``prefix`` .. ``prefix + _HIGH`` is a range.
_HIGH = "\ufff0"
#: URL scheme -> the scheme actually spoken.
SCHEMES = {"http": "http", "https": "https", "couchdb": "http", "cloudant": "https"}
AUTH_KINDS = ("none", "basic", "session", "iam")
_DATABASE_NAME = re.compile(r"[a-z][a-z0-9_$()+/-]*")


@dataclass(frozen=True)
class CouchAuth:
    """How to authenticate; the secret fields never appear in repr()."""

    kind: str = "none"
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    apikey: str = field(default="", repr=False)
    iam_url: str = ""

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.username, self.password, self.apikey) if s)


def select_auth(options: Mapping[str, str]) -> CouchAuth:
    """``auth`` option if given, else IAM with ``apikey``, Basic with ``username``, else none."""
    username = options.get("username", "")
    password = options.get("password", "")
    apikey = options.get("apikey", "")
    kind = options.get("auth", "").strip().lower()
    if not kind:
        if apikey and (username or password):
            raise ConfigError(
                "CouchDB options give both an apikey and a username/password; "
                "choose one, or set records_auth to iam or basic"
            )
        kind = "iam" if apikey else "basic" if (username or password) else "none"
    if kind not in AUTH_KINDS:
        raise ConfigError(f"unknown CouchDB auth {kind!r}; choose one of: {', '.join(AUTH_KINDS)}")
    if kind in ("basic", "session") and not (username and password):
        raise ConfigError(f"CouchDB auth {kind!r} needs both records_username and records_password")
    if kind == "iam" and not apikey:
        raise ConfigError("CouchDB auth 'iam' needs records_apikey")
    if kind == "none":
        return CouchAuth()
    if kind == "iam":
        return CouchAuth("iam", apikey=apikey, iam_url=options.get("iam_url", ""))
    return CouchAuth(kind, username=username, password=password)


def parse_url(url: str) -> tuple[str, str]:
    """``couchdb://host:port/db`` -> (``http://host:port``, ``db``)."""
    parts = urlsplit(url)
    scheme = SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ConfigError(
            f"{redact_url(url)} is not a CouchDB URL; "
            f"use one of the schemes: {', '.join(sorted(SCHEMES))}"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"put CouchDB credentials in options (records_username/records_password or "
            f"records_apikey), not in the URL {redact_url(url)}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in CouchDB URL {url}") from None
    if not parts.hostname:
        raise ConfigError(f"CouchDB URL {url} needs a host, e.g. http://127.0.0.1:5984/owdedup")
    if parts.query or parts.fragment:
        raise ConfigError(f"CouchDB URL {url} takes no query or fragment; settings are options")
    path = parts.path.strip("/")
    if "/" in path:
        raise ConfigError(
            f"CouchDB URL {url} must name at most one database (write a '/' in its name as %2F)"
        )
    database = unquote(path) or DEFAULT_DATABASE
    if not _DATABASE_NAME.fullmatch(database):
        raise ConfigError(
            f"{database!r} is not a CouchDB database name: lower-case letter first, then "
            "a-z, 0-9 or _$()+/-"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{scheme}://{host}" + (f":{port}" if port else ""), database


def doc_id(function_id: str, input_digest: str) -> str:
    return RECORD_PREFIX + record_id(function_id, input_digest)


def record_doc(record: Record) -> dict[str, Any]:
    return {"type": "record", **record.to_dict()}


def record_from_doc(doc: Mapping[str, Any]) -> Record:
    """A stored document back to a Record (``_id``, ``_rev`` and ``type`` are ignored)."""
    return Record.from_dict(doc)


def counts_doc(
    function: str, *, hits: int, misses: int, saved_ms: float, saved_bytes: int,
    at: float | None = None,
) -> dict[str, Any]:
    return {
        "type": "counts", "function": function, "hits": hits, "misses": misses,
        "saved_ms": saved_ms, "saved_bytes": saved_bytes,
        "at": round(time.time() if at is None else at, 3),
    }


def counts_id(function: str) -> str:
    return f"{COUNTS_PREFIX}{function}:{os.urandom(16).hex()}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """*text* with every secret replaced by ``***`` (defence in depth: none should be there)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _short_reason(exc: BaseException) -> str:
    """``[Errno 111] Connection refused`` out of requests' nested connection errors."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\][^)'\"]*", text)
    if match:
        return match.group(0).strip()
    if "timed out" in text.lower():
        return "timed out"
    return type(exc).__name__


@dataclass(frozen=True)
class _Sdk:
    CloudantV1: Any
    ApiException: type[Exception]
    RequestException: type[Exception]
    NoAuthAuthenticator: Any
    BasicAuthenticator: Any
    CouchDbSessionAuthenticator: Any
    IAMAuthenticator: Any


@functools.cache
def _sdk() -> _Sdk:
    """Import the client on first use (about 100 ms: requests, urllib3, the IBM SDK core)."""
    from ibm_cloud_sdk_core import ApiException  # type: ignore[import-untyped]
    from ibm_cloud_sdk_core.authenticators import (  # type: ignore[import-untyped]
        BasicAuthenticator,
        IAMAuthenticator,
        NoAuthAuthenticator,
    )
    from ibmcloudant.cloudant_v1 import CloudantV1  # type: ignore[import-untyped]
    from ibmcloudant.couchdb_session_authenticator import (  # type: ignore[import-untyped]
        CouchDbSessionAuthenticator,
    )
    from requests import RequestException

    return _Sdk(
        CloudantV1, ApiException, RequestException, NoAuthAuthenticator, BasicAuthenticator,
        CouchDbSessionAuthenticator, IAMAuthenticator,
    )


def build_authenticator(auth: CouchAuth) -> Any:
    """The ibm_cloud_sdk_core authenticator for *auth* (no request is made)."""
    sdk = _sdk()
    try:
        if auth.kind == "basic":
            return sdk.BasicAuthenticator(auth.username, auth.password)
        if auth.kind == "session":
            return sdk.CouchDbSessionAuthenticator(auth.username, auth.password)
        if auth.kind == "iam":
            return sdk.IAMAuthenticator(auth.apikey, url=auth.iam_url or None)
        return sdk.NoAuthAuthenticator()
    except (ValueError, TypeError) as exc:
        message = scrub(str(exc), auth.secrets)
    # Raised outside the handler so that nothing holding the credentials is chained on.
    raise ConfigError(f"CouchDB {auth.kind} credentials rejected by the client: {message}")


Reply = tuple[int, Any]


class CouchRecordStore(RecordStore):
    scheme = "couchdb"

    def __init__(
        self, service_url: str, database: str = DEFAULT_DATABASE, auth: CouchAuth | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.service_url = service_url.rstrip("/")
        self.database = database
        self.auth = auth or CouchAuth()
        self.timeout_s = timeout_s
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, str]) -> CouchRecordStore:
        service_url, database = parse_url(url)
        try:
            timeout_s = float(options.get("timeout", DEFAULT_TIMEOUT_S))
        except ValueError:
            raise ConfigError(
                f"records_timeout must be seconds, not {options.get('timeout')!r}"
            ) from None
        return cls(service_url, database, select_auth(options), timeout_s=timeout_s)

    def describe(self) -> str:
        return f"{self.service_url}/{self.database}"

    def __repr__(self) -> str:
        return f"CouchRecordStore({self.describe()!r}, auth={self.auth.kind!r})"

    # -- client and error handling ------------------------------------------------------

    def _client_here(self) -> Any:
        """One client (one connection pool) per process: sockets must not cross a fork."""
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    client = _sdk().CloudantV1(authenticator=build_authenticator(self.auth))
                    client.set_service_url(self.service_url)
                    client.set_http_config(
                        {"timeout": (min(5.0, self.timeout_s), self.timeout_s)}
                    )
                    self._client, self._pid = client, pid
        return self._client

    def _request(
        self, action: str, call: Callable[[Any], Any], expect: tuple[int, ...] = ()
    ) -> Reply:
        """(status, parsed body) of one request; an error status in *expect* is returned with
        a None body, any other failure is a StoreError naming no credentials."""
        sdk = _sdk()
        client = self._client_here()
        try:
            response = call(client)
        except sdk.ApiException as exc:
            status = int(getattr(exc, "status_code", 0) or 0)
            if status in expect:
                return status, None
            failure = self._http_error(action, status, str(getattr(exc, "message", "") or ""))
        except sdk.RequestException as exc:
            failure = StoreError(
                f"cannot reach CouchDB at {self.describe()} ({action}): "
                + scrub(_short_reason(exc), self.auth.secrets)
            )
        except StopIteration:
            # ibmcloudant 0.11's session token manager does not check the status of its POST
            # /_session: a refused login surfaces as StopIteration (no AuthSession cookie).
            failure = self._http_error(action, 401, "no session cookie from POST /_session")
        except ValueError as exc:  # a body that is not JSON, an argument the SDK refuses
            failure = StoreError(
                f"CouchDB {action} failed at {self.describe()}: "
                + scrub(str(exc)[:200], self.auth.secrets)
            )
        else:
            return int(response.get_status_code()), response.get_result()
        if self.auth.kind in ("session", "iam"):
            # A token request that failed leaves the SDK's token manager waiting up to 60 s
            # before it tries again; a new client (and token manager) next time instead.
            self._client = None
        # Raised outside the handlers: the client's exception holds the request (and its
        # Authorization header), and must not ride along as __context__.
        raise failure

    def _http_error(self, action: str, status: int, reason: str) -> StoreError:
        reason = scrub(reason[:200], self.auth.secrets)
        if status in (401, 403):
            return StoreError(
                f"CouchDB at {self.describe()} refused the {self.auth.kind} credentials "
                f"({action}: HTTP {status} {reason})".rstrip()
            )
        return StoreError(f"CouchDB {action} failed at {self.describe()}: HTTP {status} {reason}")

    def _create_database(self) -> None:
        self._request("create database", lambda c: c.put_database(self.database), expect=(412,))

    def _insert(self, action: str, key: str, doc: Mapping[str, Any]) -> bool:
        """PUT a new document; False if the id exists (409). Creates a missing database."""
        def put(client: Any) -> Any:
            return client.put_document(self.database, key, dict(doc))

        status, _ = self._request(action, put, expect=(404, 409))
        if status == 404:  # only the database can be missing for a PUT by id
            self._create_database()
            status, _ = self._request(action, put, expect=(409,))
        return status != 409

    # -- RecordStore --------------------------------------------------------------------

    def get(self, function_id: str, input_digest: str) -> Record | None:
        key = doc_id(function_id, input_digest)
        status, doc = self._request(
            "lookup", lambda c: c.get_document(self.database, key), expect=(404,)
        )
        return None if status == 404 or not doc else record_from_doc(doc)

    def get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Record]:
        pairs = list(dict.fromkeys(keys))
        if len(pairs) <= 1:
            return super().get_many(pairs)  # one GET by id is the cheapest single read
        by_id = {doc_id(*pair): pair for pair in pairs}
        status, result = self._request(
            "lookup",
            lambda c: c.post_all_docs(self.database, keys=list(by_id), include_docs=True),
            expect=(404,),
        )
        found: dict[tuple[str, str], Record] = {}
        if status == 404 or not result:
            return found
        for row in result.get("rows", []):
            doc = row.get("doc")  # absent for a missing id, null for a deleted one
            pair = by_id.get(row.get("key"))
            if doc and pair is not None:
                found[pair] = record_from_doc(doc)
        return found

    def put(self, record: Record) -> tuple[Record, bool]:
        key = doc_id(record.function_id, record.input_digest)
        doc = record_doc(record)
        for _ in range(3):
            if self._insert("record write", key, doc):
                return record, True
            existing = self.get(record.function_id, record.input_digest)
            if existing is not None:
                return existing, False
            # the winner's record was deleted between our PUT and GET: write ours after all
        raise StoreError(
            f"record {key} in {self.describe()} kept changing while it was written; giving up"
        )

    def delete(self, function_id: str, input_digest: str) -> None:
        key = doc_id(function_id, input_digest)
        status, doc = self._request(
            "record delete", lambda c: c.get_document(self.database, key), expect=(404,)
        )
        if status == 404 or not doc:
            return
        rev = str(doc["_rev"])
        # 409: rewritten since we read it (deleted and recomputed): that one is left alone.
        self._request(
            "record delete",
            lambda c: c.delete_document(self.database, key, rev=rev),
            expect=(404, 409),
        )

    def add_counts(
        self, function: str, *, hits: int = 0, misses: int = 0, saved_ms: float = 0.0,
        saved_bytes: int = 0,
    ) -> None:
        if not (hits or misses or saved_ms or saved_bytes):
            return
        doc = counts_doc(
            function, hits=hits, misses=misses, saved_ms=saved_ms, saved_bytes=saved_bytes
        )
        self._insert("counter update", counts_id(function), doc)

    def bulk_load(self, records: Iterable[Record], batch_size: int = 2000) -> int:
        """Insert many records with ``_bulk_docs`` (imports, benchmarks); ids that exist are
        left as they are. Returns how many were created."""
        created = 0
        batch: list[dict[str, Any]] = []

        def flush() -> int:
            body = {"docs": batch}
            status, rows = self._request(
                "bulk load", lambda c: c.post_bulk_docs(self.database, body), expect=(404,)
            )
            if status == 404:
                self._create_database()
                _, rows = self._request(
                    "bulk load", lambda c: c.post_bulk_docs(self.database, body)
                )
            return sum(1 for row in rows or [] if row.get("ok"))

        for record in records:
            batch.append(
                {"_id": doc_id(record.function_id, record.input_digest), **record_doc(record)}
            )
            if len(batch) >= batch_size:
                created += flush()
                batch = []
        if batch:
            created += flush()
        return created

    def stats(self) -> list[FunctionStats]:
        by_function: dict[str, FunctionStats] = {}
        for doc in self._scan(RECORD_PREFIX):
            function = str(doc.get("function", ""))
            entry = by_function.setdefault(function, FunctionStats(function))
            entry.records += 1
            output = doc.get("output")
            entry.output_bytes += int(output.get("bytes", 0)) if isinstance(output, dict) else 0
        for doc in self._scan(COUNTS_PREFIX):
            function = str(doc.get("function", ""))
            entry = by_function.setdefault(function, FunctionStats(function))
            entry.hits += int(doc.get("hits", 0))
            entry.misses += int(doc.get("misses", 0))
            entry.saved_ms += float(doc.get("saved_ms", 0.0))
            entry.saved_bytes += int(doc.get("saved_bytes", 0))
        return sorted(by_function.values(), key=lambda s: s.function)

    def _scan(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every document whose id starts with *prefix*, one ``_all_docs`` page at a time."""
        page_size = PAGE_SIZE
        start: str | None = prefix
        while start is not None:
            rows = self._page(start, prefix + _HIGH, page_size + 1)
            for row in rows[:page_size]:
                doc = row.get("doc")
                if isinstance(doc, dict):
                    yield doc
            # The extra row, if any, is where the next page starts.
            start = str(rows[page_size]["id"]) if len(rows) > page_size else None

    def _page(self, start: str, end: str, limit: int) -> list[dict[str, Any]]:
        status, result = self._request(
            "stats",
            lambda c: c.post_all_docs(
                self.database, start_key=start, end_key=end, include_docs=True, limit=limit
            ),
            expect=(404,),
        )
        if status == 404 or not result:
            return []
        rows: list[dict[str, Any]] = result.get("rows", [])
        return rows

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.get_http_client().close()
