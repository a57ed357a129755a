"""A live ``owdedup serve`` per test (free port, its own temp state) and a small REST client."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.serve.server import DevServer, ServeConfig
from tests.tooling import wait_until

AUTH = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:" + "k" * 64


class Reply:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.raw, self.headers = status, body, headers

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None


class Client:
    """Just enough of a REST client: JSON in, :class:`Reply` out, never raises on status."""

    def __init__(self, url: str, auth: str | None = AUTH, namespace: str = "_") -> None:
        self.url, self.auth, self.namespace = url, auth, namespace

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                auth: str | None = None, absolute: bool = False) -> Reply:
        url = path if absolute else f"{self.url}/api/v1/namespaces/{self.namespace}/{path}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"}
        key = auth or self.auth
        if key:
            headers["Authorization"] = "Basic " + base64.b64encode(key.encode()).decode()
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=90) as response:
                return Reply(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.read(), dict(error.headers))

    def put(self, path: str, body: dict[str, Any], overwrite: bool = False) -> Reply:
        return self.request("PUT", f"{path}?overwrite={'true' if overwrite else 'false'}", body)

    def action(self, name: str, code: str, *, kind: str = "python:3.11", binary: bool = False,
               main: str | None = None, **fields: Any) -> Reply:
        exec_: dict[str, Any] = {"kind": kind, "code": code, "binary": binary}
        if main:
            exec_["main"] = main
        reply = self.put(f"actions/{name}", {"exec": exec_, **fields}, overwrite=True)
        assert reply.status == 200, reply.raw
        return reply

    def invoke(self, name: str, payload: dict[str, Any] | None = None, *, blocking: bool = True,
               result: bool = False) -> Reply:
        query = f"blocking={str(blocking).lower()}&result={str(result).lower()}"
        return self.request("POST", f"actions/{name}?{query}", payload or {})

    def activation(self, activation_id: str, suffix: str = "", timeout: float = 30) -> Reply:
        """GET an activation (or its /logs or /result), waiting until it exists."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.request("GET", f"activations/{activation_id}{suffix}")
            if reply.status != 404 or time.monotonic() > deadline:
                return reply
            time.sleep(0.05)


def params(pairs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in pairs.items()]


def zip_code(files: dict[str, str]) -> str:
    """A zip of *files* (name -> text), base64-encoded as OpenWhisk takes it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    return wait_until(check, timeout=timeout, what=what, interval=0.05)


ServerFactory = Callable[..., DevServer]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[DevServer] = []

    def make(**overrides: Any) -> DevServer:
        config = ServeConfig(**{"auth": AUTH, "port": 0, **overrides})
        server = DevServer(config)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def server(make_server: ServerFactory) -> DevServer:
    return make_server()


@pytest.fixture
def client(server: DevServer) -> Client:
    return Client(server.url)
