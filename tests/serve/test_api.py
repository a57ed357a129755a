"""The REST layer as a pure function (no sockets, no processes): routing, translation, errors.

The runner here is a fake; the catalog, the controller and the engine are the real ones.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from owdedup.engine.manifest import ActionDef
from owdedup.serve.api import Request, Response, RestApi
from owdedup.serve.catalog import ServeCatalog, parse_name
from owdedup.serve.controller import Controller, SystemRunner
from owdedup.serve.errors import BadRequest
from tests.serve.conftest import AUTH, params

BASIC = "Basic " + base64.b64encode(AUTH.encode()).decode()


class EchoRunner:
    """Returns what it was given; an ``error`` parameter becomes an application error."""

    def __init__(self) -> None:
        self.seen_ids: list[str] = []

    def run(self, action: ActionDef, params: dict[str, Any],
            activation_id: str) -> tuple[Any, list[str], bool]:
        self.seen_ids.append(activation_id)
        if "error" in params:
            return {"error": params["error"]}, ["failing"], False
        return {"action": action.fqn, "params": params}, [f"ran {action.name}"], False


class Api:
    def __init__(self) -> None:
        self.catalog = ServeCatalog()
        self.runner = EchoRunner()
        system = SystemRunner(self.runner)
        system.register("/whisk.system/messaging/kafkaFeed", lambda p: {"feed": p})
        self.catalog.add_system_action("messaging/kafkaFeed")
        self.controller = Controller(self.catalog, system)
        self.api = RestApi(self.catalog, self.controller, auth=AUTH, blocking_wait_s=10)

    def __call__(self, method: str, target: str, body: Any = None, *, raw: bytes | None = None,
                 auth: str | None = BASIC) -> Response:
        headers = {"authorization": auth} if auth else {}
        data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        if not target.startswith("/"):
            target = f"/api/v1/namespaces/_/{target}"
        return self.api.handle(Request(method, target, headers, data))


@pytest.fixture
def api() -> Iterator[Api]:
    handle = Api()
    yield handle
    handle.catalog.close()


def test_errors_have_openwhisk_shape_and_status(api: Api) -> None:
    for response, status in [
        (api("GET", "actions", auth=None), 401),
        (api("GET", "actions", auth="Basic " + base64.b64encode(b"u:wrong").decode()), 401),
        (api("GET", "actions", auth="Bearer x"), 401),
        (api("GET", "actions/missing"), 404),
        (api("PUT", "packages/p", raw=b"{"), 400),
        (api("PATCH", "packages"), 405),
        (api("GET", "actions?limit=500"), 400),
        (api("GET", "/api/v1/namespaces/other/actions"), 403),
    ]:
        assert response.status == status, (status, response.body)
        assert set(response.body) == {"error", "code"}
        assert response.body["code"] == response.headers["X-Request-ID"]


def test_root_and_api_info_need_no_auth(api: Api) -> None:
    assert api("GET", "/", auth=None).status == 200
    assert api("GET", "/api/v1", auth=None).status == 200
    assert api("GET", "/api/v1/namespaces").body == ["guest"]
    assert api("GET", "/elsewhere").status == 404


def test_invoke_blocking_result_and_application_error(api: Api) -> None:
    api.catalog.put_package("p", {"parameters": params({"a": 1})}, overwrite=False)
    api("PUT", "actions/p/x?overwrite=true", {"exec": {"kind": "python:default", "code": "x"}})
    assert api.catalog.action_view("p/x")["exec"]["kind"] == "python:3.11"
    full = api("POST", "actions/p/x?blocking=true", {"b": 2})
    assert full.status == 200
    assert full.body["response"]["result"] == {"action": "p/x", "params": {"a": 1, "b": 2}}
    assert full.body["activationId"] == api.runner.seen_ids[-1]  # the id the runner saw
    only = api("POST", "actions/p/x?blocking=true&result=true", {})
    assert only.body == {"action": "p/x", "params": {"a": 1}}
    failed = api("POST", "actions/p/x?blocking=true&result=true", {"error": "bad"})
    assert failed.status == 502 and failed.body == {"error": "bad"}
    queued = api("POST", "actions/p/x", {})
    assert queued.status == 202 and list(queued.body) == ["activationId"]


def test_names_with_encoded_slashes_reach_the_system_feed(api: Api) -> None:
    # Older Go clients query-escape the name: messaging%2FkafkaFeed.
    target = "/api/v1/namespaces/whisk.system/actions/messaging%2FkafkaFeed?blocking=true"
    reply = api("POST", target, {"lifecycleEvent": "READ"})
    assert reply.status == 200, reply.body
    assert reply.body["response"]["result"] == {"feed": {"lifecycleEvent": "READ"}}
    annotations = {a["key"]: a["value"] for a in reply.body["annotations"]}
    assert annotations["path"] == "whisk.system/messaging/kafkaFeed"
    assert (reply.body["name"], reply.body.get("package")) == ("kafkaFeed", "messaging")
    got = api("GET", "/api/v1/namespaces/whisk.system/actions/messaging/kafkaFeed")
    assert got.status == 200 and got.body["namespace"] == "whisk.system/messaging"
    assert api("PUT", "/api/v1/namespaces/whisk.system/actions/messaging/x", {}).status == 403


def test_trigger_fire_and_204(api: Api) -> None:
    api("PUT", "actions/a", {"exec": {"kind": "python:3.11", "code": "x"}})
    api("PUT", "triggers/t", {})
    assert api("POST", "triggers/t", {}).status == 204
    assert api("POST", "triggers/t", {}).encode() == b""
    api("PUT", "rules/r", {"trigger": "t", "action": "a"})
    fired = api("POST", "triggers/t", {"x": 1})
    assert fired.status == 202
    pending = api.controller.store.get(fired.body["activationId"])
    assert pending is not None and pending.kind == "trigger"


def test_sequence_records_and_ids(api: Api) -> None:
    api("PUT", "actions/a", {"exec": {"kind": "python:3.11", "code": "x"}})
    api("PUT", "actions/b", {"exec": {"kind": "python:3.11", "code": "x"}})
    api("PUT", "actions/s", {"exec": {"kind": "sequence", "components": ["/_/a", "/guest/b"]}})
    reply = api("POST", "actions/s?blocking=true", {"n": 1})
    assert reply.status == 200
    assert reply.body["logs"] == api.runner.seen_ids[-2:]
    assert reply.body["response"]["result"]["action"] == "/b"
    assert api("GET", f"activations/{reply.body['activationId']}").body["name"] == "s"
    assert api("PUT", "actions/s?overwrite=true",
               {"exec": {"kind": "sequence", "components": ["/_/s"]}}).status == 400


def test_parse_name_forms() -> None:
    assert parse_name("a", "guest").absolute == "/guest/a"
    assert parse_name("p/a", "guest").absolute == "/guest/p/a"
    assert parse_name("/_/p/a", "guest").absolute == "/guest/p/a"
    assert parse_name("/other/a", "guest").namespace == "other"
    assert parse_name("/a", "guest").absolute == "/guest/a"  # the engine's default package
    for bad in ("a/b/c", "/a/b/c/d", "", "p/"):
        with pytest.raises(BadRequest):
            parse_name(bad, "guest")


def test_request_repr_leaves_out_the_credentials() -> None:
    secret = base64.b64encode(AUTH.encode()).decode()
    request = Request("GET", "/api/v1/namespaces/_/actions",
                      {"authorization": f"Basic {secret}"})
    shown = repr(request)
    assert "authorization" not in shown and secret not in shown
    assert "/api/v1/namespaces/_/actions" in shown
