"""CouchDB 3 / Cloudant record store: one document per record, read and written by its id.

Layout of the database (``owdedup`` unless the URL names another)::

    rec:<function_id>-<input_digest>   one record: Record.to_dict() plus "type": "record"
    counts:<function>:<random hex>     one process's counters: hits, misses, saved_ms, ...

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
* Counters never touch a record (a hot record's revision never changes) and never share a
  document between writers: each process keeps its running totals in a document of its own
  (a random id), rewritten with the ``_rev`` it got back from its last write, so a flush is
  one ``PUT`` with no read and no 409 from others. The document holds totals, not deltas, so
  a write whose reply was lost is simply superseded by the next one (on its 409 the current
  ``_rev`` is read and the totals written again): nothing is counted twice. The number of
  counter documents grows with the number of processes (warm containers), not of lookups.
* ``stats()`` adds the counters and records up with ``_all_docs`` range scans over the two
  id prefixes, a page of ``PAGE_SIZE`` documents at a time, so it never holds more than one
  page.
* The database is created by the first write that finds it missing (404), instead of by an
  extra request on start-up that every cold action would pay for; a concurrent creator's
  412 is fine. Reads of a missing database simply find nothing.

Transport: the store speaks to the server through ``request(method, path, *, params, json)
-> (status, body)``, one implementation of the logic above over either transport:

* ``Urllib3Transport`` (the default): a ``urllib3.PoolManager`` (keep-alive, timeouts,
  retries of connection failures only) with no auth, HTTP Basic, or a CouchDB cookie session
  (``POST /_session`` with the form fields ``name`` and ``password``, the cookie reused, one
  new login on a 401). urllib3 is already loaded by the S3 client in every action that uses
  the record store, so the first request costs little more than the connection.
* ``CloudantTransport``: IBM's ``ibmcloudant`` SDK, for IAM ``apikey`` auth (Cloudant), whose
  token manager earns its cost: it and the ``requests`` stack under it take ~75-150 ms to
  import, so they are imported only when a store with IAM auth (or ``transport=ibmcloudant``)
  makes its first request.

Credentials come only from options: ``username`` and ``password`` (HTTP Basic, or a cookie
session with ``auth=session``), ``apikey`` (IBM Cloud IAM, for Cloudant), or none; the option
``transport`` (``auto``, ``urllib3`` or ``ibmcloudant``) overrides the choice above. A URL
with ``user:password@`` is refused. Errors name the endpoint, the operation and the HTTP
status only: never a header, cookie or password, and no client exception (which may hold the
request and its Authorization header) is chained onto them.
"""

from __future__ import annotations

import base64
import functools
import json as json_module
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlencode, urlsplit

from owdedup.errors import ConfigError, StoreError
from owdedup.records.base import FunctionStats, Record, RecordStore, record_id
from owdedup.registry import redact_url
from owdedup.registry import scrub as scrub  # re-exported: one scrubber for every backend

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


@dataclass(frozen=True)
class _Tally:
    """This process's running totals for one function and where they are stored."""

    doc_id: str
    rev: str | None = None
    hits: int = 0
    misses: int = 0
    saved_ms: float = 0.0
    saved_bytes: int = 0

    def plus(self, *, hits: int, misses: int, saved_ms: float, saved_bytes: int) -> _Tally:
        return _Tally(self.doc_id, self.rev, self.hits + hits, self.misses + misses,
                      self.saved_ms + saved_ms, self.saved_bytes + saved_bytes)


def counts_id(function: str) -> str:
    return f"{COUNTS_PREFIX}{function}:{os.urandom(16).hex()}"


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
def _cloudant() -> _Sdk:
    """Import IBM's client on first use (75-150 ms: requests, ibm_cloud_sdk_core, jwt, ...)."""
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


@functools.cache
def _sdk() -> Any:
    """The HTTP client the default transport imports on a store's first request: urllib3
    (already loaded wherever the S3 client is). benchmarks/bench_actions.py calls this as
    the record store's client import."""
    import urllib3

    return urllib3


def build_authenticator(auth: CouchAuth) -> Any:
    """The ibm_cloud_sdk_core authenticator for *auth* (no request is made)."""
    sdk = _cloudant()
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


class TransportError(Exception):
    """A request that got no HTTP reply (or an unreadable one). The message is safe to show:
    a short reason, credentials scrubbed, and nothing chained."""


class Transport(Protocol):
    """How the store reaches the server: one HTTP request, its status and parsed JSON body
    (None when empty; for an error status, whatever the server said). Raises TransportError
    only when there is no usable reply."""

    #: Drop this transport (and make a new one) after a request fails.
    discard_after_failure: bool

    def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Reply: ...

    def close(self) -> None: ...


def doc_path(database: str, *parts: str) -> str:
    """``/db/part/...`` with every segment percent-encoded (a ``/`` in a database name or id
    too); ``:`` is left as it is, being legal in a path segment (``/owdedup/rec:f-d``)."""
    return "/" + "/".join(quote(segment, safe=":") for segment in (database, *parts))


def with_query(path: str, params: Mapping[str, str] | None) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def basic_authorization(username: str, password: str) -> str:
    """The ``Authorization`` value of HTTP Basic (UTF-8, as CouchDB and the SDK expect)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def session_cookie(set_cookie: str | None) -> str | None:
    """``AuthSession=...`` out of a ``Set-Cookie`` value, or None."""
    for part in (set_cookie or "").replace(",", ";").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == "AuthSession" and value:
            return f"AuthSession={value}"
    return None


#: Request headers whose values are secret: never logged, shown or put in a message.
SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """*headers* fit to show: the secret ones' values replaced by ``***``."""
    return {k: "***" if k.lower() in SECRET_HEADERS else v for k, v in headers.items()}


def _decode(data: bytes) -> Any:
    """A reply body: parsed JSON, None when empty, else its (short) text."""
    if not data:
        return None
    try:
        return json_module.loads(data)
    except ValueError:
        return data[:200].decode("utf-8", "replace")


class Urllib3Transport:
    """The default transport: urllib3 with no auth, HTTP Basic or a cookie session."""

    discard_after_failure = False
    #: Connection attempts retried (the request never left); a read is never retried, since a
    #: PUT might have been applied.
    CONNECT_RETRIES = 2

    def __init__(self, service_url: str, auth: CouchAuth, timeout_s: float) -> None:
        if auth.kind not in ("none", "basic", "session"):
            raise ConfigError(f"the urllib3 CouchDB transport does not do {auth.kind} auth")
        self.service_url = service_url.rstrip("/")
        self.auth = auth
        urllib3 = _sdk()
        self._errors: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)
        self._http = urllib3.PoolManager(
            num_pools=2, maxsize=10,
            timeout=urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s),
            retries=urllib3.Retry(
                total=self.CONNECT_RETRIES, connect=self.CONNECT_RETRIES, read=0, redirect=0,
                status=0, other=0, backoff_factor=0.05, raise_on_redirect=False,
                raise_on_status=False,
            ),
        )
        self._headers = {"Accept": "application/json", "User-Agent": "owdedup"}
        if auth.kind == "basic":
            self._headers["Authorization"] = basic_authorization(auth.username, auth.password)
        self._cookie: str | None = None
        self._login_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Urllib3Transport({self.service_url!r}, auth={self.auth.kind!r})"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (*self.auth.secrets, *((self._cookie,) if self._cookie else ()))

    def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Reply:
        body = None if json is None else json_module.dumps(json, separators=(",", ":")).encode()
        url = with_query(path, params)
        if self.auth.kind != "session":
            return self._send(method, url, body, self._headers)
        cookie = self._cookie or self._login(None)
        if cookie is None:
            return 401, {"error": "unauthorized", "reason": "session login refused"}
        status, reply = self._send(method, url, body, {**self._headers, "Cookie": cookie})
        if status == 401:  # the session expired (or the server restarted): log in once more
            cookie = self._login(cookie)
            if cookie is None:
                return 401, {"error": "unauthorized", "reason": "session login refused"}
            status, reply = self._send(method, url, body, {**self._headers, "Cookie": cookie})
        return status, reply

    def _login(self, stale: str | None) -> str | None:
        """A session cookie: the current one if another thread renewed *stale* meanwhile, else
        a new one from ``POST /_session``; None if refused."""
        with self._login_lock:
            if self._cookie is not None and self._cookie != stale:
                return self._cookie
            self._cookie = None
            form = urlencode({"name": self.auth.username, "password": self.auth.password})
            status, _, set_cookie = self._send_raw(
                "POST", "/_session", form.encode(),
                {**self._headers, "Content-Type": "application/x-www-form-urlencoded"},
            )
            cookie = session_cookie(set_cookie) if 200 <= status < 300 else None
            self._cookie = cookie
            return cookie

    def _send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Reply:
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        status, data, set_cookie = self._send_raw(method, url, body, headers)
        if set_cookie and self._cookie:  # CouchDB renews a session that is close to expiry
            self._cookie = session_cookie(set_cookie) or self._cookie
        reply = _decode(data)
        if 200 <= status < 300 and isinstance(reply, str):
            raise TransportError(f"reply to {method} is not JSON")
        return status, reply

    def _send_raw(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, bytes, str | None]:
        try:
            response = self._http.request(
                method, self.service_url + url, body=body, headers=dict(headers),
                redirect=False,
            )
        except self._errors as exc:
            reason = scrub(_short_reason(exc), self.secrets)
        else:
            return response.status, response.data, response.headers.get("Set-Cookie")
        # Raised outside the handler: urllib3's exception must not ride along as __context__.
        raise TransportError(reason)

    def close(self) -> None:
        self._http.clear()


class CloudantTransport:
    """IBM's ``ibmcloudant`` SDK as a transport: for IAM (its token manager renews tokens)."""

    # A token request that failed leaves the SDK's token manager waiting up to 60 s before
    # it tries again: a new client (and token manager) next time instead.
    discard_after_failure = True

    def __init__(self, service_url: str, auth: CouchAuth, timeout_s: float) -> None:
        self.auth = auth
        self._sdk = _cloudant()
        self._client = self._sdk.CloudantV1(authenticator=build_authenticator(auth))
        self._client.set_service_url(service_url.rstrip("/"))
        self._client.set_http_config({"timeout": (min(5.0, timeout_s), timeout_s)})

    def __repr__(self) -> str:
        return f"CloudantTransport(auth={self.auth.kind!r})"

    def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Reply:
        sdk = self._sdk
        headers = {"Accept": "application/json"}
        data = None
        if json is not None:
            data = json_module.dumps(json, separators=(",", ":"))
            headers["Content-Type"] = "application/json"
        try:
            request = self._client.prepare_request(
                method, path, headers=headers, params=dict(params or {}), data=data
            )
            response = self._client.send(request)
        except sdk.ApiException as exc:
            status = int(getattr(exc, "status_code", 0) or 0)
            reason = scrub(str(getattr(exc, "message", "") or "")[:200], self.auth.secrets)
            return status, {"reason": reason}
        except sdk.RequestException as exc:
            failure = TransportError(scrub(_short_reason(exc), self.auth.secrets))
        except StopIteration:
            # ibmcloudant 0.11's session token manager does not check the status of its POST
            # /_session: a refused login surfaces as StopIteration (no AuthSession cookie).
            return 401, {"reason": "no session cookie from POST /_session"}
        except ValueError as exc:  # a body that is not JSON, an argument the SDK refuses
            failure = TransportError(scrub(str(exc)[:200], self.auth.secrets))
        else:
            return int(response.get_status_code()), response.get_result()
        # Raised outside the handlers: the SDK's exception holds the request (and its
        # Authorization header), and must not ride along as __context__.
        raise failure

    def close(self) -> None:
        self._client.get_http_client().close()


TRANSPORTS: dict[str, Callable[[str, CouchAuth, float], Transport]] = {
    "urllib3": Urllib3Transport, "ibmcloudant": CloudantTransport,
}


def select_transport(name: str, auth: CouchAuth) -> str:
    """``auto``: the SDK for IAM, urllib3 for everything else."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return "ibmcloudant" if auth.kind == "iam" else "urllib3"
    if name not in TRANSPORTS:
        raise ConfigError(
            f"unknown CouchDB transport {name!r}; choose one of: auto, {', '.join(TRANSPORTS)}"
        )
    if name == "urllib3" and auth.kind == "iam":
        raise ConfigError("CouchDB IAM auth needs the ibmcloudant transport")
    return name


def _reason(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("reason") or body.get("error") or "")
    return str(body or "")


class CouchRecordStore(RecordStore):
    scheme = "couchdb"

    def __init__(
        self, service_url: str, database: str = DEFAULT_DATABASE, auth: CouchAuth | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S, transport: str = "auto",
    ) -> None:
        self.service_url = service_url.rstrip("/")
        self.database = database
        self.auth = auth or CouchAuth()
        self.timeout_s = timeout_s
        self.transport = select_transport(transport, self.auth)
        self._transport: Transport | None = None
        self._pid = 0
        self._lock = threading.Lock()
        # This process's counter documents (see the module docstring); a forked child
        # starts its own, since two writers of one document would meet as 409s.
        self._tallies: dict[str, _Tally] = {}
        self._tallies_pid = 0
        self._tally_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, str]) -> CouchRecordStore:
        service_url, database = parse_url(url)
        try:
            timeout_s = float(options.get("timeout", DEFAULT_TIMEOUT_S))
        except ValueError:
            raise ConfigError(
                f"records_timeout must be seconds, not {options.get('timeout')!r}"
            ) from None
        return cls(
            service_url, database, select_auth(options), timeout_s=timeout_s,
            transport=options.get("transport", "auto"),
        )

    def describe(self) -> str:
        return f"{self.service_url}/{self.database}"

    def __repr__(self) -> str:
        return f"CouchRecordStore({self.describe()!r}, auth={self.auth.kind!r})"

    # -- transport and error handling ---------------------------------------------------

    def _transport_here(self) -> Transport:
        """One transport (one connection pool) per process: sockets must not cross a fork."""
        pid = os.getpid()
        transport = self._transport
        if transport is None or self._pid != pid:
            with self._lock:
                transport = self._transport
                if transport is None or self._pid != pid:
                    transport = TRANSPORTS[self.transport](
                        self.service_url, self.auth, self.timeout_s
                    )
                    self._transport, self._pid = transport, pid
        return transport

    def path(self, *parts: str) -> str:
        """``/<database>/<part>/...``, percent-encoded."""
        return doc_path(self.database, *parts)

    def _request(
        self, action: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
        json: Any = None, expect: tuple[int, ...] = (),
    ) -> Reply:
        """(status, parsed body) of one request; an error status in *expect* is returned with
        a None body, any other failure is a StoreError naming no credentials."""
        transport = self._transport_here()
        try:
            status, body = transport.request(method, path, params=params, json=json)
        except TransportError as exc:
            failure = StoreError(
                f"cannot reach CouchDB at {self.describe()} ({action}): "
                + scrub(str(exc), self.auth.secrets)
            )
        else:
            if 200 <= status < 300:
                return status, body
            if status in expect:
                return status, None
            failure = self._http_error(action, status, _reason(body))
        if transport.discard_after_failure:
            self._transport = None
        # Raised outside the handler: nothing of the transport's rides along as __context__.
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
        self._request("create database", "PUT", self.path(), expect=(412,))

    def _insert(self, action: str, key: str, doc: Mapping[str, Any]) -> bool:
        """PUT a new document; False if the id exists (409). Creates a missing database."""
        path, body = self.path(key), dict(doc)
        status, _ = self._request(action, "PUT", path, json=body, expect=(404, 409))
        if status == 404:  # only the database can be missing for a PUT by id
            self._create_database()
            status, _ = self._request(action, "PUT", path, json=body, expect=(409,))
        return status != 409

    # -- RecordStore --------------------------------------------------------------------

    def get(self, function_id: str, input_digest: str) -> Record | None:
        key = doc_id(function_id, input_digest)
        status, doc = self._request("lookup", "GET", self.path(key), expect=(404,))
        return None if status == 404 or not doc else record_from_doc(doc)

    def get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Record]:
        pairs = list(dict.fromkeys(keys))
        if len(pairs) <= 1:
            return super().get_many(pairs)  # one GET by id is the cheapest single read
        by_id = {doc_id(*pair): pair for pair in pairs}
        status, result = self._request(
            "lookup", "POST", self.path("_all_docs"),
            json={"keys": list(by_id), "include_docs": True}, expect=(404,),
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
        path = self.path(doc_id(function_id, input_digest))
        status, doc = self._request("record delete", "GET", path, expect=(404,))
        if status == 404 or not doc:
            return
        # 409: rewritten since we read it (deleted and recomputed): that one is left alone.
        self._request(
            "record delete", "DELETE", path, params={"rev": str(doc["_rev"])},
            expect=(404, 409),
        )

    def add_counts(
        self, function: str, *, hits: int = 0, misses: int = 0, saved_ms: float = 0.0,
        saved_bytes: int = 0,
    ) -> None:
        if not (hits or misses or saved_ms or saved_bytes):
            return
        with self._tally_lock:
            if self._tallies_pid != os.getpid():
                self._tallies, self._tallies_pid = {}, os.getpid()
            tally = self._tallies.get(function) or _Tally(counts_id(function))
            updated = tally.plus(hits=hits, misses=misses, saved_ms=saved_ms,
                                 saved_bytes=saved_bytes)
            # Kept only once written: on a failure the caller keeps its counts and adds
            # them again later, and the totals here must not have grown by them.
            self._tallies[function] = self._write_tally(function, updated)

    def _write_tally(self, function: str, tally: _Tally) -> _Tally:
        """PUT the totals over the last revision; returns the tally with its new ``_rev``."""
        doc = counts_doc(function, hits=tally.hits, misses=tally.misses,
                         saved_ms=tally.saved_ms, saved_bytes=tally.saved_bytes)
        path, rev = self.path(tally.doc_id), tally.rev
        for _attempt in range(3):
            body = {**doc, "_rev": rev} if rev else doc
            status, reply = self._request("counter update", "PUT", path, json=body,
                                          expect=(404, 409))
            if status == 404:  # the database is missing (deleted, or never made)
                self._create_database()
                rev = None
            elif status == 409:  # a write whose reply was lost, or the document was deleted
                _, current = self._request("counter update", "GET", path, expect=(404,))
                rev = str(current["_rev"]) if isinstance(current, dict) else None
            else:
                # Without a rev in the reply the next write meets a 409 and reads it.
                new_rev = str(reply["rev"]) if isinstance(reply, dict) and "rev" in reply else rev
                return _Tally(tally.doc_id, new_rev, tally.hits, tally.misses,
                              tally.saved_ms, tally.saved_bytes)
        raise StoreError(f"CouchDB counter update failed at {self.describe()}: "
                         "the document kept changing under this process")

    def bulk_load(self, records: Iterable[Record], batch_size: int = 2000) -> int:
        """Insert many records with ``_bulk_docs`` (imports, benchmarks); ids that exist are
        left as they are. Returns how many were created."""
        created = 0
        batch: list[dict[str, Any]] = []

        def flush() -> int:
            path, body = self.path("_bulk_docs"), {"docs": batch}
            status, rows = self._request("bulk load", "POST", path, json=body, expect=(404,))
            if status == 404:
                self._create_database()
                _, rows = self._request("bulk load", "POST", path, json=body)
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
        body = {"start_key": start, "end_key": end, "include_docs": True, "limit": limit}
        status, result = self._request(
            "stats", "POST", self.path("_all_docs"), json=body, expect=(404,)
        )
        if status == 404 or not result:
            return []
        rows: list[dict[str, Any]] = result.get("rows", [])
        return rows

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None and self._pid == os.getpid():
            transport.close()
