"""Invoking another action from inside an action, on OpenWhisk or on the local engine.

On OpenWhisk the call goes to the REST API at ``__OW_API_HOST`` with the key in
``__OW_API_KEY`` (the calling action needs the annotation ``provide-api-key: true``), through
``requests``, which the Python runtime already ships. On the local engine, the engine offers
itself for the duration of each activation (a context variable, not a global), so the same
action code runs unchanged in ``owdedup invoke``/``map``/``watch``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from owdedup.runtime import env as env_names
from owdedup.runtime.errors import ConfigError, StoreError


@dataclass(frozen=True)
class Invocation:
    activation_id: str
    success: bool | None  # None: not known yet (a non-blocking invoke)
    result: dict[str, Any] | None = None


Invoker = Callable[[str, dict[str, Any], bool], Invocation]

_LOCAL_INVOKER: ContextVar[Invoker | None] = ContextVar("owdedup_local_invoker", default=None)


@contextmanager
def local_invoker(invoker: Invoker) -> Iterator[None]:
    """Make *invoker* the target of :func:`invoke` inside this block (used by the engine)."""
    token = _LOCAL_INVOKER.set(invoker)
    try:
        yield
    finally:
        _LOCAL_INVOKER.reset(token)


def invoke(name: str, params: dict[str, Any], *, blocking: bool) -> Invocation:
    """Invoke action or sequence *name* (``package/action``) in the current namespace."""
    local = _LOCAL_INVOKER.get()
    if local is not None:
        return local(name, params, blocking)
    return invoke_rest(name, params, blocking, os.environ)


#: Back-off between attempts when OpenWhisk answers 429 (doubling, with jitter).
THROTTLED_FIRST_PAUSE_S = 0.5
THROTTLED_MAX_PAUSE_S = 8.0
#: What is kept of the activation's time for the work after the invoke.
DEADLINE_MARGIN_S = 2.0


def deadline_of(env: Mapping[str, str]) -> float | None:
    """This activation's deadline (``__OW_DEADLINE``, epoch ms) in epoch seconds; None where
    none is set (a local run)."""
    try:
        return int(env[env_names.OW_DEADLINE]) / 1000
    except (KeyError, ValueError):
        return None


def _deadline_s(env: Mapping[str, str]) -> float:
    """This activation's deadline less a margin, in seconds; a minute from now where it is
    not set (a local run)."""
    deadline = deadline_of(env)
    return time.time() + 60.0 if deadline is None else deadline - DEADLINE_MARGIN_S


def api_access(env: Mapping[str, str], purpose: str) -> tuple[str, tuple[str, str]]:
    """(API host, (user, password)) from ``__OW_API_HOST``/``__OW_API_KEY``; a clear
    ``ConfigError`` (starting with *purpose*) when the action was given no key."""
    host, key = env.get(env_names.OW_API_HOST), env.get(env_names.OW_API_KEY)
    if not host or not key or ":" not in key:
        raise ConfigError(
            f"{purpose}: {env_names.OW_API_HOST}/{env_names.OW_API_KEY} are not set "
            "(annotate the action with provide-api-key: true)"
        )
    user, _, password = key.partition(":")
    return host.rstrip("/"), (user, password)


_SESSION: Any = None


def get_entity(path: str, env: Mapping[str, str], purpose: str,
               timeout_s: float = 10.0) -> dict[str, Any] | None:
    """``GET /api/v1/namespaces/<path>`` (``ns/actions/name?code=false``...): the entity,
    None when it does not exist (404), a ``StoreError`` for any other failure."""
    host, auth = api_access(env, purpose)
    import requests  # shipped by the OpenWhisk Python runtime; only needed here

    global _SESSION
    if _SESSION is None:  # one connection pool per warm container
        _SESSION = requests.Session()
    try:
        response = _SESSION.get(f"{host}/api/v1/namespaces/{path}", auth=auth,
                                timeout=timeout_s)
    except requests.RequestException as exc:
        raise StoreError(f"{purpose}: {type(exc).__name__} from the API host") from exc
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise StoreError(f"{purpose}: HTTP {response.status_code} {response.text[:200]}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise StoreError(f"{purpose}: the API host answered no JSON object")
    return body


def invoke_rest(
    name: str, params: dict[str, Any], blocking: bool, env: Mapping[str, str]
) -> Invocation:
    host, (user, password) = api_access(env, "cannot invoke other actions")
    import requests  # shipped by the OpenWhisk Python runtime; only needed here

    namespace = quote(env.get(env_names.OW_NAMESPACE) or "_", safe="")
    url = (f"{host}/api/v1/namespaces/{namespace}/actions/"
           f"{quote(name.strip('/'), safe='/')}?blocking={'true' if blocking else 'false'}")
    deadline = _deadline_s(env)
    pause = THROTTLED_FIRST_PAUSE_S
    while True:
        try:
            response = requests.post(url, json=params, auth=(user, password), timeout=70)
        except requests.RequestException as exc:
            raise StoreError(f"invoking {name} failed: {type(exc).__name__}") from exc
        if response.status_code != 429:
            break
        # The namespace is at its limits: wait and ask again while this activation has time
        # (giving up early would drop the work, e.g. a dispatched upload).
        wait = pause * random.uniform(0.5, 1.0)
        if time.time() + wait > deadline:
            raise StoreError(f"invoking {name} failed: the namespace stayed at its limits "
                             f"(429 {response.text[:200]}) until this activation's deadline")
        time.sleep(wait)
        pause = min(THROTTLED_MAX_PAUSE_S, pause * 2)
    if response.status_code in (200, 202, 502):
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise StoreError(f"invoking {name} failed: HTTP {response.status_code} without "
                             "an activation in the reply")
        activation_id = str(body.get("activationId", ""))
        if response.status_code == 202:
            return Invocation(activation_id, None)
        reply = body.get("response") or {}
        return Invocation(activation_id, bool(reply.get("success")), reply.get("result"))
    raise StoreError(f"invoking {name} failed: HTTP {response.status_code} {response.text[:200]}")
