"""HTTP transports of the CouchDB / Cloudant record store, and the credentials they send.

``owdedup.runtime.records.couchdb`` holds the store: the document layout, the ids, the counters and
the paging, written once over ``request(method, path, *, params, json) -> (status, body)``.
This module holds what answers that call, kept apart so that the store's logic does not
depend on a client library and the client libraries are imported only when a store makes
its first request (the cost of a cold action is mostly imports):

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
``transport`` (``auto``, ``urllib3`` or ``ibmcloudant``) overrides the choice above. A
transport never puts a header, cookie or password in a message: a ``TransportError`` carries
a short reason with the credentials scrubbed, and no client exception (which may hold the
request and its Authorization header) is chained onto it.
"""

from __future__ import annotations

import base64
import functools
import json as json_module
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from owdedup.runtime.errors import ConfigError
from owdedup.runtime.registry import scrub

AUTH_KINDS = ("none", "basic", "session", "iam")


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
    (already loaded wherever the S3 client is). benchmarks/bench_actions.py and
    tests/deploy/test_build.py call this as the record store's client import, by the name
    ``owdedup.runtime.records.couchdb:_sdk`` (re-exported there)."""
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

