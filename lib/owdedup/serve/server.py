"""``owdedup serve``: the REST front end wired together, and its HTTP glue.

:class:`DevServer` builds the pieces (catalog -> process runner -> controller on the shared
engine -> REST API, plus the Kafka feed provider behind
``/whisk.system/messaging/kafkaFeed``) and serves them with the standard library's threading
HTTP server; :func:`serve_command` is the typer command.
"""

from __future__ import annotations

import logging
import secrets
import signal
import string
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Annotated, Any

import typer

from owdedup.engine.conductor import SYSTEM_NAMESPACE
from owdedup.runtime import env as env_names
from owdedup.serve.api import CONTENT_TYPE, Request, Response, RestApi
from owdedup.serve.catalog import DEFAULT_NAMESPACE, ServeCatalog
from owdedup.serve.controller import Controller, SystemRunner
from owdedup.serve.kafka_feed import FEED_ACTION, KafkaFeeds
from owdedup.serve.limits import NamespaceLimits
from owdedup.serve.process_runner import ProcessRunner

log = logging.getLogger("owdedup.serve")

DEFAULT_PORT = 3233  # OpenWhisk standalone's port


#: 2 GiB of invoker user memory in 256 MB containers, as OpenWhisk standalone runs them.
DEFAULT_CONTAINERS = 8


@dataclass(frozen=True)
class ServeConfig:
    auth: str = field(repr=False)  # "uuid:key"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    namespace: str = DEFAULT_NAMESPACE
    state_dir: Path | None = None
    runtime_site: Path | None = None
    blocking_wait_s: float = 60.0
    #: A connection that sends nothing for this long is closed (a half-sent request, an
    #: idle keep-alive), so slow clients cannot hold the server's threads.
    idle_timeout_s: float = 60.0
    #: The largest memory limit an action may ask for (None: OpenWhisk's default, 512 MB).
    max_memory_mb: int | None = None
    warm_per_action: int = 2
    action_env: Mapping[str, str] = field(default_factory=dict)
    #: The namespace's invocation limits, OpenWhisk's defaults unless raised (``--limits``).
    limits: NamespaceLimits = field(default_factory=NamespaceLimits)
    #: Action processes that may run at once (an invoker's container pool: 2 GiB of user
    #: memory in 256 MB containers); further activations wait, and their ``waitTime`` says
    #: how long. None: no cap.
    containers: int | None = DEFAULT_CONTAINERS


#: The key ``serve`` requires, from the environment (a command-line value shows in ``ps``).
ENV_SERVE_AUTH = env_names.SERVE_AUTH


def generate_auth() -> str:
    """A key shaped like OpenWhisk's: ``<uuid>:<64 letters and digits>``."""
    alphabet = string.ascii_letters + string.digits
    return f"{uuid.uuid4()}:{''.join(secrets.choice(alphabet) for _ in range(64))}"


#: Connections waiting to be accepted (the standard library's default of 5 reset about a
#: third of 500 concurrent clients).
LISTEN_BACKLOG = 1024


class _BadBody(Exception):
    """The request's framing (Content-Length, chunk sizes) cannot be read."""


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a blocking invoke in flight never holds up shutdown
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], api: RestApi, idle_timeout_s: float) -> None:
        self.api = api
        self.idle_timeout_s = idle_timeout_s
        super().__init__(address, _Handler)


def _error(status: int, message: str) -> Response:
    return Response(status, {"error": message, "code": uuid.uuid4().hex})


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, a keep-alive client's delayed ACK
    # held every response back by ~40 ms (measured: a no-op invoke 47.8 ms -> 1.0 ms).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout_s)  # for every read and write

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue``: invite the body only from a client that may send it."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        refused = self.server.api.authenticate(Request(self.command, self.path, headers))
        if refused is not None:
            self.close_connection = True
            self._send(refused)
            return False
        return super().handle_expect_100()

    def _handle(self) -> None:
        """Authenticate on the headers, then read a body no larger than the endpoint takes,
        then answer; a refused body is never read, and its connection is closed."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        api = self.server.api
        refused = api.authenticate(Request(self.command, self.path, headers))
        if refused is not None:
            self.close_connection = True
            self._send(refused)
            return
        limit = api.body_limit(self.command, self.path)
        try:
            body = self._body(limit)
        except _BadBody as exc:
            self.close_connection = True
            self._send(_error(400, f"The request content was malformed:\n{exc}"))
            return
        except TimeoutError:  # the client stopped sending half-way
            self.close_connection = True
            return
        if body is None:
            self.close_connection = True
            self._send(_error(413, f"Request larger than allowed: > {limit} bytes."))
            return
        self._send(api.handle(Request(self.command, self.path, headers, body)))

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _handle

    def _body(self, limit: int) -> bytes | None:
        """The body, None when it is over *limit* (unread), _BadBody for bad framing."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            # One buffer: a list of chunks cost ~40 bytes per chunk, so a body sent in
            # 1-byte chunks took 40 times its size.
            chunks = bytearray()
            total = 0
            while True:
                size = _parse_size(self.rfile.readline(1024).split(b";")[0].strip() or b"0",
                                   16, "chunk size")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(chunks)
                total += size
                if total > limit:
                    return None
                chunks += self.rfile.read(size)
                self.rfile.readline(1024)
        length = _parse_size(self.headers.get("Content-Length") or b"0", 10, "Content-Length")
        if length > limit:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: Response) -> None:
        payload = response.encode()
        self.send_response(response.status)
        if payload:
            self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def _parse_size(text: str | bytes, base: int, what: str) -> int:
    """A non-negative size from a header or chunk line; _BadBody if it is not one."""
    raw = text.decode("latin-1") if isinstance(text, bytes) else text
    try:
        value = int(raw.strip(), base)
    except ValueError:
        raise _BadBody(f"invalid {what}: {raw.strip()[:40]!r}") from None
    if value < 0 or (base == 10 and not raw.strip().isdigit()):
        raise _BadBody(f"invalid {what}: {raw.strip()[:40]!r}")
    return value


class DevServer:
    """The development server, bound at construction (``port=0`` picks a free port)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        if config.state_dir is None:
            self._temp = tempfile.TemporaryDirectory(prefix="owdedup-serve-cache-")
            cache = Path(self._temp.name)
        else:
            cache = config.state_dir / "cache"
        self.catalog = ServeCatalog(config.namespace, config.state_dir,
                                    max_memory_mb=config.max_memory_mb)
        self.process_runner = ProcessRunner(
            cache, namespace=config.namespace, api_key=config.auth,
            runtime_site=config.runtime_site, warm_per_action=config.warm_per_action,
            action_version=self.catalog.action_version,
            env=config.action_env,
        )
        self.runner = SystemRunner(self.process_runner)
        self.catalog.on_code_dropped.append(self.process_runner.discard_code)
        self.controller = Controller(self.catalog, self.runner,
                                     init_ms=self.process_runner.take_init_ms,
                                     limits=config.limits, containers=config.containers)
        self.feeds = KafkaFeeds(
            self._fire_from_feed, namespace=config.namespace, auth_key=config.auth,
            state_file=None if config.state_dir is None else config.state_dir / "feeds.json",
            trigger_exists=lambda name: self.catalog.trigger(name) is not None,
        )
        feed = self.catalog.add_system_action(
            FEED_ACTION, {"feed": True, "description": "Fire a trigger with Kafka messages"})
        self.runner.register(feed.fqn, self.feeds.lifecycle)
        self.catalog.on_trigger_deleted.append(self.feeds.discard)
        self.api = RestApi(self.catalog, self.controller, auth=config.auth,
                           blocking_wait_s=config.blocking_wait_s)
        self.httpd = _HttpServer((config.host, config.port), self.api, config.idle_timeout_s)
        host = "127.0.0.1" if config.host in ("", "0.0.0.0") else config.host
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.process_runner.api_host = self.url
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def _fire_from_feed(self, trigger: str, payload: dict[str, Any]) -> None:
        self.controller.fire(trigger, payload)

    def start(self) -> None:
        """Serve on a background thread (and resume the persisted feeds)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,),
                                        name="owdedup-serve", daemon=True)
        self._thread.start()
        self.feeds.resume()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()
        self.feeds.close()
        self.process_runner.close()
        self.catalog.close()
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    def __enter__(self) -> DevServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def usage_lines(url: str, namespace: str, auth: str, generated: bool) -> list[str]:
    key = auth if generated else "<UUID:KEY>"
    return [
        f"owdedup serve: {url} (namespace {namespace}) - a development server, not for "
        "production",
        *([f"  generated key: {auth}"] if generated else []),
        f"  wsk property set --apihost {url} --auth {key}",
        f"  wskdeploy --apihost {url} --auth {key} --namespace {namespace} -m manifest.yaml",
        f"  export __OW_API_HOST={url} __OW_API_KEY={key} __OW_NAMESPACE={namespace}",
        f"  (feeds: /{SYSTEM_NAMESPACE}/{FEED_ACTION})",
    ]


def _prepared_site() -> Path:
    """The runtime image's packages, installed once into the cache (``--runtime-site``
    overrides): without them every action importing requests fails."""
    from owdedup.actionloop.site import RuntimeSiteError, prepare_runtime_site

    try:
        return prepare_runtime_site(log=lambda line: typer.echo(line, err=True))
    except RuntimeSiteError as exc:
        typer.echo(f"error: {exc}\n(or give a folder of packages with --runtime-site)",
                   err=True)
        raise typer.Exit(1) from None


def serve_command(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", help="Port to listen on")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(
        "--host", help="Address to bind; keep 127.0.0.1 (plain HTTP, one key)")] = "127.0.0.1",
    auth: Annotated[str | None, typer.Option(
        "--auth", help=f"UUID:KEY that clients must present: set {ENV_SERVE_AUTH} rather than "
        "--auth, which every user of the machine sees in `ps` (default: a new key, printed)",
        envvar=ENV_SERVE_AUTH, show_envvar=True)] = None,
    state: Annotated[Path | None, typer.Option(
        "--state", help="Keep entities, code and feed registrations in DIR across restarts"
    )] = None,
    runtime_site: Annotated[Path | None, typer.Option(
        "--runtime-site", help="Folder of packages every action can import, standing for the "
        "runtime's preinstalled ones (default: the python:3.11 image's packages, installed "
        "once into ~/.cache/owdedup/runtime-site)")] = None,
    namespace: Annotated[str, typer.Option("--namespace", help="The key's namespace")] = (
        DEFAULT_NAMESPACE),
    max_memory: Annotated[int | None, typer.Option(
        "--max-memory", help="Largest memory limit (MB) an action may set; default 512, "
        "OpenWhisk's whisk.memory.max", min=256)] = None,
    limits: Annotated[str, typer.Option(
        "--limits", help="The namespace's limits over OpenWhisk's defaults, as wskadmin "
        "limits names them, e.g. invocationsPerMinute=6000,concurrentInvocations=64,"
        "firesPerMinute=600 (default 120, 100, 60)")] = "",
    containers: Annotated[int, typer.Option(
        "--containers", min=1, help="Action processes that may run at once; the rest wait "
        "their turn (an invoker's container pool)")] = DEFAULT_CONTAINERS,
    warm: Annotated[int, typer.Option(
        "--warm", min=1, help="Idle processes kept per action for warm starts (an invoker "
        "keeps its idle containers while it has memory; raise it with --containers to "
        "measure warm runs of more than 2 at once)")] = ServeConfig.warm_per_action,
) -> None:
    """Development server for the OpenWhisk REST API subset that wskdeploy, wsk and the
    openwhisk JS client use: actions run in local Python processes, Kafka feeds fire
    triggers. Not for production (plain HTTP, one namespace, one key). The key: set
    OWDEDUP_SERVE_AUTH=UUID:KEY, or let serve make one and print it."""
    source = ctx.get_parameter_source("auth")  # typer's own (vendored) click enum: by name
    if source is not None and source.name == "COMMANDLINE":
        typer.echo(f"warning: a key given with --auth is visible to every user in `ps`; "
                   f"set {ENV_SERVE_AUTH} instead", err=True)
    generated = auth is None
    key = auth or generate_auth()
    user, sep, secret = key.partition(":")
    if not sep or not user or not secret:
        raise typer.BadParameter("must be UUID:KEY", param_hint="--auth")
    try:
        namespace_limits = NamespaceLimits.parse(limits)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--limits") from None
    config = ServeConfig(auth=key, host=host, port=port, namespace=namespace,
                         state_dir=state.resolve() if state else None,
                         runtime_site=(runtime_site or _prepared_site()).resolve(),
                         max_memory_mb=max_memory, limits=namespace_limits,
                         containers=containers, warm_per_action=warm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        server = DevServer(config)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from None
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for line in usage_lines(server.url, namespace, key, generated):
        typer.echo(line, err=True)
    with server:
        while not stop.wait(0.5):
            pass
    typer.echo("owdedup serve: stopped", err=True)
