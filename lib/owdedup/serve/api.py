"""The REST layer of ``owdedup serve``: routing and request -> response translation.

Pure: a :class:`Request` (method, target, headers, body bytes) goes in, a :class:`Response`
(status, JSON body, headers) comes out, so every endpoint is testable without a socket; the
HTTP server in :mod:`owdedup.serve.server` only moves bytes. Errors are raised as
:class:`~owdedup.serve.errors.ApiError` subclasses (status as a class attribute) and turned
into OpenWhisk's ``{"error": ..., "code": <transaction id>}`` in :meth:`RestApi.handle` only.

Endpoints (``{ns}`` is the namespace of the key, or ``_``): ``GET /`` (runtimes and limits,
read by wskdeploy), ``GET /api/v1``, ``GET /api/v1/namespaces``, and under
``/api/v1/namespaces/{ns}``: ``packages[/{p}]``, ``actions[/{p}]/[{a}]`` (``POST``
invokes), ``triggers[/{t}]`` (``POST`` fires), ``rules[/{r}]`` (``POST`` sets the status),
``activations[/{id}[/logs|/result]]``, ``limits`` (the namespace's, enforced with 429s:
see ``limits``). ``/whisk.system/messaging/kafkaFeed`` can be read and invoked by every key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from owdedup.engine.activation import APPLICATION_ERROR, DEVELOPER_ERROR, Activation
from owdedup.engine.conductor import SYSTEM_NAMESPACE, EntityPath
from owdedup.runtime.errors import NotFoundError
from owdedup.serve.catalog import (
    DEFAULT_KINDS,
    LIMIT_RANGES,
    MB,
    RUNTIME_KINDS,
    ServeCatalog,
)
from owdedup.serve.controller import Controller
from owdedup.serve.errors import (
    ApiError,
    BadRequest,
    EntityNotFound,
    Forbidden,
    MethodNotAllowed,
    TooLarge,
    Unauthorized,
)

log = logging.getLogger("owdedup.serve")

PAYLOAD_LIMIT = 1 * MB  # invoke and fire payloads
ENTITY_LIMIT = 72 * MB  # an action PUT: 48 MB of code, base64-encoded, plus the rest
#: Any other request body: 1 MB of parameters plus annotations and names.
OTHER_LIMIT = 2 * PAYLOAD_LIMIT
#: A blocking invoke waits at most this long (OpenWhisk's maxWaitForBlockingActivation).
MAX_BLOCKING_WAIT_MS = 60_000
MAX_LIST = 200
DEFAULT_LIST = 30
CONTENT_TYPE = "application/json"  # exactly: wskdeploy checks it as a substring


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query, as received
    # lower-case names; kept out of repr: ``authorization`` carries the credentials
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable; None sends no body
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        if self.body is None or self.status == 204:
            return b""
        return json.dumps(self.body).encode("utf-8")


def runtimes_info(ranges: Mapping[str, tuple[int, int, int]] = LIMIT_RANGES) -> dict[str, Any]:
    """``GET /``: the runtime kinds and limits, in OpenWhisk's shape."""
    runtimes: dict[str, list[dict[str, Any]]] = {}
    for family, kinds in RUNTIME_KINDS.items():
        runtimes[family] = [{
            "kind": kind,
            "default": kind == DEFAULT_KINDS[family],
            "deprecated": False,
            "attached": {"attachmentName": "codefile", "attachmentType": "text/plain"},
            "image": f"openwhisk/action-{kind.replace(':', '-v')}:nightly",
            "requireMain": False,
        } for kind in kinds]
    return {
        "description": "owdedup serve (development server)",
        "api_paths": ["/api/v1"],
        "support": {"github": "https://github.com/apache/openwhisk/issues",
                    "slack": "http://slack.openwhisk.org"},
        "runtimes": runtimes,
        "limits": {
            "actions_per_minute": 120, "triggers_per_minute": 60, "concurrent_actions": 100,
            "sequence_length": 50,
            "min_action_duration": ranges["timeout"][0],
            "max_action_duration": ranges["timeout"][1],
            "min_action_memory": ranges["memory"][0] * MB,
            "max_action_memory": ranges["memory"][1] * MB,
            "min_action_logs": ranges["logs"][0] * MB,
            "max_action_logs": ranges["logs"][1] * MB,
        },
    }


def api_info() -> dict[str, Any]:
    return {"description": "OpenWhisk API (owdedup serve)", "api_paths": ["/api/v1"],
            "api_version": "1.0.0", "api_version_path": "v1", "build": "owdedup",
            "buildno": "dev", "swagger_paths": {}}


@dataclass(frozen=True)
class _Route:
    method: str
    namespace: str  # the resolved namespace (never "_")
    collection: str
    names: list[str]
    listing: bool  # a trailing slash: ``actions/pkg/`` lists a package's actions
    query: dict[str, str]
    request: Request


class RestApi:
    def __init__(self, catalog: ServeCatalog, controller: Controller, *, auth: str,
                 blocking_wait_s: float = 60.0) -> None:
        self.catalog = catalog
        self.controller = controller
        self.namespace = catalog.namespace
        self.auth = auth
        self.blocking_wait_s = blocking_wait_s

    def handle(self, request: Request) -> Response:
        transaction = uuid.uuid4().hex
        try:
            response = self._dispatch(request)
        except ApiError as exc:
            response = Response(exc.status, {"error": exc.message, "code": transaction})
        except NotFoundError:  # the engine's message names the entities there are: not sent
            response = Response(404, {"error": EntityNotFound().message, "code": transaction})
        except Exception:  # one place turns surprises into a 500
            log.exception("%s %s failed", request.method, request.target)
            response = Response(500, {"error": "The server encountered an internal error.",
                                      "code": transaction})
        response.headers.setdefault("X-Request-ID", transaction)
        return response

    # -- routing ---------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> Response:
        split = urlsplit(request.target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        path = unquote(split.path)
        parts = [part for part in path.split("/") if part]
        method = request.method.upper()
        if not parts:
            self._only(method, "GET")
            return Response(200, runtimes_info(self.catalog.limit_ranges))
        if parts[:2] != ["api", "v1"]:
            raise EntityNotFound()
        rest = parts[2:]
        if not rest:
            self._only(method, "GET")
            return Response(200, api_info())
        self._authenticate(request)
        if rest[0] != "namespaces":
            raise EntityNotFound()
        if len(rest) == 1:
            self._only(method, "GET")
            return Response(200, [self.namespace])
        namespace = self._namespace(rest[1], rest[2:], method)
        if len(rest) == 2:
            self._only(method, "GET")
            return Response(200, {c: self.catalog.list(c) for c in ServeCatalog.COLLECTIONS})
        if rest[2:] == ["limits"]:
            self._only(method, "GET")
            return Response(200, self.controller.throttle.limits.to_json())
        route = _Route(method, namespace, rest[2], rest[3:],
                       path.endswith("/") and len(rest) > 3, query, request)
        handler = {
            "actions": self._actions, "packages": self._packages, "triggers": self._triggers,
            "rules": self._rules, "activations": self._activations,
        }.get(route.collection)
        if handler is None:
            raise EntityNotFound()
        return handler(route)

    @staticmethod
    def needs_authentication(target: str) -> bool:
        """Whether *target* is behind the key (everything below ``/api/v1/``), so the HTTP
        glue can refuse a stranger before reading the body."""
        parts = [part for part in unquote(urlsplit(target).path).split("/") if part]
        return parts[:2] == ["api", "v1"] and len(parts) > 2

    @staticmethod
    def body_limit(method: str, target: str) -> int:
        """The largest body a request to *target* may carry: an action PUT (code) is
        larger than anything else."""
        parts = [part for part in unquote(urlsplit(target).path).split("/") if part]
        is_action_put = method.upper() == "PUT" and len(parts) > 4 and parts[4] == "actions"
        return ENTITY_LIMIT if is_action_put else OTHER_LIMIT

    def authenticate(self, request: Request) -> Response | None:
        """None when *request* may proceed; else the 401 answer."""
        if not self.needs_authentication(request.target):
            return None
        try:
            self._authenticate(request)
        except Unauthorized as exc:
            transaction = uuid.uuid4().hex
            return Response(401, {"error": exc.message, "code": transaction},
                            {"X-Request-ID": transaction})
        return None

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        if not header:
            raise Unauthorized("The resource requires authentication, which was not supplied "
                               "with the request")
        scheme, _, value = header.partition(" ")
        try:
            supplied = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            supplied = ""
        if scheme.lower() != "basic" or not hmac.compare_digest(supplied.encode(),
                                                                self.auth.encode()):
            raise Unauthorized("The supplied authentication is invalid")

    def _namespace(self, given: str, rest: list[str], method: str) -> str:
        if given in ("_", self.namespace):
            return self.namespace
        system_feed = (given == SYSTEM_NAMESPACE and len(rest) >= 2 and rest[0] == "actions"
                       and method in ("GET", "POST"))
        if system_feed:
            return SYSTEM_NAMESPACE
        raise Forbidden(f"The supplied authentication is not authorized to access '{given}'.")

    @staticmethod
    def _only(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise MethodNotAllowed(f"HTTP method {method} is not allowed on this resource.")

    # -- collections -----------------------------------------------------------------------

    def _actions(self, route: _Route) -> Response:
        names = route.names
        if not names or (route.listing and len(names) == 1):
            self._only(route.method, "GET")
            package = names[0] if names else None
            return self._listing(route, self.catalog.list("actions", package), "actions")
        if len(names) > 2:
            raise EntityNotFound()
        path = EntityPath(route.namespace, names[0] if len(names) == 2 else "", names[-1])
        if route.namespace == SYSTEM_NAMESPACE:
            if route.method == "GET":
                return Response(200, self.catalog.system_action_doc(path.relative))
            return self._invoke(route, path.absolute)
        if route.method == "GET":
            code = route.query.get("code", "true").lower() != "false"
            return Response(200, self.catalog.action_view(path.relative, code=code))
        if route.method == "PUT":
            body = self._json_object(route.request, ENTITY_LIMIT)
            return Response(200, self.catalog.put_action(path, body, _overwrite(route)))
        if route.method == "DELETE":
            return Response(200, self.catalog.delete_action(path.relative))
        self._only(route.method, "POST")
        return self._invoke(route, path.relative)

    def _invoke(self, route: _Route, name: str) -> Response:
        payload = self._json_object(route.request, PAYLOAD_LIMIT)
        blocking = route.query.get("blocking", "false").lower() == "true"
        result_only = route.query.get("result", "false").lower() == "true"
        wait_s = self._blocking_wait(route.query)
        pending = self.controller.invoke(name, payload)
        headers = {"x-openwhisk-activation-id": pending.activation_id}
        if not blocking:
            return Response(202, {"activationId": pending.activation_id}, headers)
        activation = pending.wait(wait_s)
        if activation is None:  # still running: OpenWhisk stops waiting and says where to look
            return Response(202, {"activationId": pending.activation_id}, headers)
        body = activation.result if result_only else rest_record(activation)
        return Response(_invoke_status(activation), body, headers)

    def _blocking_wait(self, query: Mapping[str, str]) -> float:
        """Seconds a blocking invoke waits: the ``timeout`` query parameter (ms, at most
        60000), else the server's wait."""
        timeout = _int(query, "timeout")
        if timeout is None:
            return self.blocking_wait_s
        if not 0 < timeout <= MAX_BLOCKING_WAIT_MS:
            raise BadRequest(f"Timeout must be number of milliseconds up to "
                             f"{MAX_BLOCKING_WAIT_MS}.")
        return min(timeout / 1000, self.blocking_wait_s)

    def _packages(self, route: _Route) -> Response:
        if not route.names:
            self._only(route.method, "GET")
            public = _flag(route.query, "public")
            return self._listing(route, self.catalog.list("packages", public=public),
                                 "packages")
        if len(route.names) != 1:
            raise EntityNotFound()
        name = route.names[0]
        if route.method == "GET":
            return Response(200, self.catalog.package_view(name))
        if route.method == "PUT":
            body = self._json_object(route.request, OTHER_LIMIT)
            return Response(200, self.catalog.put_package(name, body, _overwrite(route)))
        self._only(route.method, "DELETE")
        return Response(200, self.catalog.delete_package(name, _flag(route.query, "force")))

    def _triggers(self, route: _Route) -> Response:
        if not route.names:
            self._only(route.method, "GET")
            return self._listing(route, self.catalog.list("triggers"), "triggers")
        if len(route.names) != 1:
            raise EntityNotFound()
        name = route.names[0]
        if route.method == "GET":
            return Response(200, self.catalog.trigger_view(name))
        if route.method == "PUT":
            body = self._json_object(route.request, OTHER_LIMIT)
            return Response(200, self.catalog.put_trigger(name, body, _overwrite(route)))
        if route.method == "DELETE":
            return Response(200, self.catalog.delete_trigger(name))
        self._only(route.method, "POST")
        payload = self._json_object(route.request, PAYLOAD_LIMIT)
        if self.catalog.trigger(name) is None:
            raise EntityNotFound()
        pending = self.controller.fire(name, payload)
        if pending is None:
            return Response(204)
        return Response(202, {"activationId": pending.activation_id})

    def _rules(self, route: _Route) -> Response:
        if not route.names:
            self._only(route.method, "GET")
            return self._listing(route, self.catalog.list("rules"), "rules")
        if len(route.names) != 1:
            raise EntityNotFound()
        name = route.names[0]
        if route.method == "GET":
            return Response(200, self.catalog.rule_view(name))
        if route.method == "PUT":
            body = self._json_object(route.request, PAYLOAD_LIMIT)
            return Response(200, self.catalog.put_rule(name, body, _overwrite(route)))
        if route.method == "DELETE":
            return Response(200, self.catalog.delete_rule(name))
        self._only(route.method, "POST")
        body = self._json_object(route.request, PAYLOAD_LIMIT)
        self.catalog.set_rule_status(name, body.get("status"))
        return Response(200)  # OpenWhisk answers a status change with an empty 200

    def _activations(self, route: _Route) -> Response:
        self._only(route.method, "GET")
        names = route.names
        if not names:
            since, upto = _int(route.query, "since"), _int(route.query, "upto")
            docs = _flag(route.query, "docs")
            if docs and _flag(route.query, "count"):
                raise BadRequest("The parameter 'docs' is not permitted with 'count'.")
            found = self.controller.store.list(route.query.get("name"), since, upto)
            return self._listing(route, [rest_record(a) if docs else _summary(a)
                                         for a in found], "activations")
        if len(names) > 2:
            raise EntityNotFound()
        _check_activation_id(names[0])
        activation = self.controller.store.get(names[0])
        if activation is None:
            raise EntityNotFound()
        record = rest_record(activation)
        if len(names) == 1:
            return Response(200, record)
        if names[1] == "logs":
            return Response(200, {"logs": record["logs"]})
        if names[1] == "result":
            response = dict(record["response"])
            response["size"] = len(json.dumps(response["result"]))
            return Response(200, response)
        raise EntityNotFound()

    # -- helpers ---------------------------------------------------------------------------

    def _listing(self, route: _Route, items: list[Any], collection: str) -> Response:
        if route.query.get("count", "false").lower() == "true":
            return Response(200, {collection: len(items)})
        limit = _int(route.query, "limit")
        skip = _int(route.query, "skip") or 0
        if limit is None:
            limit = DEFAULT_LIST
        if limit == 0:
            limit = MAX_LIST
        if not 0 <= limit <= MAX_LIST:
            raise BadRequest(f"The value '{limit}' is not in the range of 0 to {MAX_LIST}.")
        if skip < 0:
            raise BadRequest(f"The value '{skip}' for skip must be at least 0.")
        return Response(200, items[skip:skip + limit])

    @staticmethod
    def _json_object(request: Request, limit: int) -> dict[str, Any]:
        if len(request.body) > limit:
            raise TooLarge(f"Request larger than allowed: {len(request.body)} > {limit} bytes.")
        if not request.body.strip():
            return {}
        try:
            value = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"The request content was malformed:\n{exc}") from None
        except RecursionError:  # nested deeper than the parser goes: still the client's fault
            raise BadRequest("The request content was malformed:\nnested too deeply") from None
        if not isinstance(value, dict):
            raise BadRequest("The request content was malformed:\nexpected a JSON object")
        return value


def _overwrite(route: _Route) -> bool:
    return _flag(route.query, "overwrite")


def _flag(query: Mapping[str, str], key: str) -> bool:
    return query.get(key, "false").lower() == "true"


def _check_activation_id(text: str) -> None:
    """OpenWhisk's ActivationId: 32 hexadecimal digits, else 400."""
    if len(text) != 32:
        raise BadRequest(f"activation id length is {len(text)} but must be 32.")
    if any(c not in "0123456789abcdefABCDEF" for c in text):
        raise BadRequest("The activation id is not valid.")


def rest_record(activation: Activation) -> dict[str, Any]:
    """An activation record as the REST API returns it: OpenWhisk's ``toExtendedJson``
    drops ``statusCode`` from ``response`` (the list summary carries it at the top)."""
    record = activation.to_dict()
    record["response"] = {k: v for k, v in record["response"].items() if k != "statusCode"}
    return record


def _int(query: Mapping[str, str], key: str) -> int | None:
    value = query.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"The value '{value}' for {key} is not an integer.") from None


def _invoke_status(activation: Activation) -> int:
    if activation.success:
        return 200
    if activation.status in (APPLICATION_ERROR, DEVELOPER_ERROR):
        return 502
    return 500


def _summary(activation: Activation) -> dict[str, Any]:
    record = activation.to_dict()
    status_code = record["response"]["statusCode"]
    del record["logs"], record["response"]
    record["statusCode"] = status_code
    return record
