"""A small OpenWhisk REST client for the tooling: invoke, read activations, read limits.

Where it finds the platform is where ``wsk`` finds it: ``OW_APIHOST``/``OW_AUTH`` (and
``OW_NAMESPACE``) from the environment, else ``APIHOST``/``AUTH``/``NAMESPACE`` in
``~/.wskprops`` (or the file ``WSK_CONFIG_FILE`` names). The key only ever travels in the
``Authorization`` header: it is kept out of ``repr``, errors and logs.

Every call answers a :class:`Reply` (status and parsed body) and never raises on an HTTP
status: the caller decides what a 429 or a 502 means. A connection failure raises
:class:`PlatformUnreachable`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3

from owdedup.runtime.errors import ConfigError


class PlatformUnreachable(Exception):
    """The API host did not answer (refused, reset, timed out)."""


@dataclass(frozen=True)
class Credentials:
    apihost: str  # "https://host" or "http://127.0.0.1:3233"
    auth: str = field(repr=False)  # "uuid:key"
    namespace: str = "_"

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """From ``OW_APIHOST``/``OW_AUTH``, else the wskprops file, as ``wsk`` reads them."""
        env = os.environ if env is None else env
        props = _read_wskprops(Path(env.get("WSK_CONFIG_FILE")
                                    or Path(env.get("HOME", "~")).expanduser() / ".wskprops"))
        apihost = env.get("OW_APIHOST") or props.get("APIHOST", "")
        auth = env.get("OW_AUTH") or props.get("AUTH", "")
        namespace = env.get("OW_NAMESPACE") or props.get("NAMESPACE") or "_"
        missing = [name for name, value in (("OW_APIHOST", apihost), ("OW_AUTH", auth))
                   if not value]
        if missing:
            raise ConfigError(f"no OpenWhisk to call: set {' and '.join(missing)} "
                              "(or APIHOST/AUTH in ~/.wskprops, as for wsk)")
        if ":" not in auth:
            raise ConfigError("OW_AUTH must be 'uuid:key' as wsk prints it")
        if "://" not in apihost:
            apihost = f"https://{apihost}"  # wsk's default scheme for a bare host
        return cls(apihost.rstrip("/"), auth, namespace)


def _read_wskprops(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    props: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.strip().startswith("#"):
            props[name.strip()] = value.strip()
    return props


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    retry_after_s: float | None = None


class OpenWhiskClient:
    """REST calls over one pooled connection manager, safe to share between threads."""

    def __init__(self, credentials: Credentials, *, max_connections: int = 64,
                 timeout_s: float = 75.0) -> None:
        self.credentials = credentials
        self._base = (f"{credentials.apihost}/api/v1/namespaces/"
                      f"{quote(credentials.namespace, safe='')}")
        self._headers = {**urllib3.make_headers(basic_auth=credentials.auth),
                         "Content-Type": "application/json"}
        self._http = urllib3.PoolManager(maxsize=max_connections, block=False,
                                         retries=False, timeout=timeout_s)

    def __repr__(self) -> str:
        return f"OpenWhiskClient({self.credentials.apihost!r}, {self.credentials.namespace!r})"

    def invoke(self, action: str, params: Mapping[str, Any], *, blocking: bool,
               timeout_ms: int | None = None) -> Reply:
        """POST an invocation. Blocking: 200/502 with the activation, or 202 with its id
        once OpenWhisk stops waiting (``timeout_ms``, at most 60 s)."""
        query = f"blocking={'true' if blocking else 'false'}"
        if blocking and timeout_ms is not None:
            query += f"&timeout={int(timeout_ms)}"
        path = f"/actions/{quote(action.strip('/'), safe='/')}?{query}"
        return self._call("POST", path, json.dumps(dict(params)).encode())

    def entity(self, method: str, collection: str, name: str) -> Reply:
        """GET or DELETE one entity: ``collection`` as the REST API names it (``actions``,
        ``triggers``...), ``name`` as ``[package/]name``."""
        return self._call(method, f"/{collection}/{quote(name.strip('/'), safe='/')}")

    def put_entity(self, collection: str, name: str, body: Mapping[str, Any], *,
                   overwrite: bool) -> Reply:
        """PUT (create, or with *overwrite* replace) one entity, as ``wsk ... create`` and
        ``update`` do."""
        path = (f"/{collection}/{quote(name.strip('/'), safe='/')}"
                f"?overwrite={'true' if overwrite else 'false'}")
        return self._call("PUT", path, json.dumps(dict(body)).encode())

    def activation(self, activation_id: str) -> Reply:
        return self._call("GET", f"/activations/{quote(activation_id, safe='')}")

    def activations(self, *, since_ms: int | None = None, skip: int = 0,
                    limit: int = 200) -> Reply:
        """GET one page of the namespace's activation records (``docs=true``), newest
        first; OpenWhisk gives at most 200 a page."""
        query = f"docs=true&limit={int(limit)}&skip={int(skip)}"
        if since_ms is not None:
            query += f"&since={int(since_ms)}"
        return self._call("GET", f"/activations?{query}")

    def limits(self) -> Reply:
        return self._call("GET", "/limits")

    def hold_connections(self, count: int) -> None:
        """Keep up to *count* connections open: one per request in flight. Fewer, and every
        request beyond them opens a connection, then discards it with a warning. Call it
        before issuing (pools already made keep their size)."""
        if count > self._http.connection_pool_kw.get("maxsize", 1):
            self._http.connection_pool_kw["maxsize"] = count
            self._http.clear()

    def close(self) -> None:
        self._http.clear()

    def _call(self, method: str, path: str, body: bytes | None = None) -> Reply:
        try:
            response = self._http.request(method, self._base + path, body=body,
                                          headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise PlatformUnreachable(
                f"{self.credentials.apihost}: {type(exc).__name__}") from None
        data: Any = None
        if response.data:
            try:
                data = json.loads(response.data)
            except ValueError:
                data = None
        retry_after = response.headers.get("Retry-After")
        return Reply(response.status, data,
                     float(retry_after) if retry_after and retry_after.isdigit() else None)
