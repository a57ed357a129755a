"""Start, stop and inspect the local services as background processes on 127.0.0.1.

Each service runs in its own session with a pid file and a log file in ``<state>/run/``:

* ``couchdb``: pouchdb-server (CouchDB 1.x-style API) with its databases on disk;
* ``kafka``: a single-node KRaft broker+controller, formatted once with a random cluster id;
* ``minio``: the MinIO server with a Kafka notification target; after it is up, ``mc``
  creates the buckets and subscribes the input bucket's puts to that target.

MinIO's root credentials are generated on the first ``up`` and kept in a 0600 file; they are
printed only by :func:`env_exports` (meant for ``eval "$(owdedup services env)"``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import string
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from owdedup.services.config import ServicesConfig
from owdedup.services.install import SERVICES, check_names, find_couchdb, install, is_installed
from owdedup.services.tools import ServiceError, require, run_tool, say, tail_file
from owdedup.services.versions import KAFKA_VERSION, MINIO_VERSION, POUCHDB_SERVER_VERSION

START_TIMEOUT = {"couchdb": 60.0, "kafka": 120.0, "minio": 60.0}
STOP_TIMEOUT = 45.0
#: How long a start waits for a port that a just-stopped process may still hold.
PORT_FREE_TIMEOUT = 10.0
KAFKA_CLASS = "kafka.Kafka"
TOPIC_TOOL = "org.apache.kafka.tools.TopicCommand"
STORAGE_TOOL = "kafka.tools.StorageTool"
#: Kafka 4.x moved the console consumer into kafka-tools.
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"


# Process bookkeeping ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    ready: bool
    pid: int | None
    endpoint: str
    version: str
    log: Path

    @property
    def state(self) -> str:
        if self.running:
            return "running" if self.ready else "starting/unhealthy"
        return "stopped"


def _marker(name: str) -> str:
    """A token of the command line that identifies this service's process."""
    return {"couchdb": "pouchdb-server", "kafka": KAFKA_CLASS, "minio": "minio"}[name]


def service_ports(config: ServicesConfig, name: str) -> tuple[int, ...]:
    """The TCP ports service ``name`` listens on."""
    return {
        "couchdb": (config.couchdb_port,),
        "kafka": (config.kafka_port, config.kafka_controller_port),
        "minio": (config.minio_port, config.minio_console_port),
    }[name]


def _proc_exists(pid: int) -> bool:
    """Whether ``pid`` still exists and is not a zombie, whatever its command line.

    A process that is exiting has already released its memory (its command line reads
    empty) while it still holds its files and sockets, so a stop must wait on this,
    not on :func:`_proc_alive`, before its ports are free."""
    stat = Path(f"/proc/{pid}/stat")
    if not Path("/proc/self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = stat.read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        _reap(pid)
        return False
    return True


def _wait_ports_closed(host: str, ports: Iterable[int], timeout: float) -> list[int]:
    """Wait until nothing listens on ``ports``; returns those still open at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        busy = [port for port in ports if _port_open(host, port)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.2)


def _proc_alive(pid: int, marker: str, *, starting: bool = False) -> bool:
    """Whether ``pid`` is a live (non-zombie) process whose command line holds ``marker``
    (guards against a reused pid). ``starting``: just launched by us, so an empty command
    line (it reads so for a moment while exec loads a large binary) counts as alive."""
    if not _proc_exists(pid):
        return False
    if not Path("/proc/self").exists():
        return True  # no procfs: existence is all that can be checked
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    cmdline = raw.replace(b"\0", b" ").decode("utf-8", "replace")
    return marker in cmdline or (starting and not cmdline.strip())


#: Services started by this Python process, so that it collects them when they exit.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    """Collect an exited child of this process (tests start services in-process)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def read_pid(config: ServicesConfig, name: str) -> int | None:
    """The pid of the running service ``name``, or None (a stale pid file is removed)."""
    path = config.pid_file(name)
    try:
        pid = int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if _proc_alive(pid, _marker(name)):
        return pid
    path.unlink(missing_ok=True)
    return None


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            # A connect to a free port in the ephemeral range can, rarely, pick that very
            # port as its source and connect to itself; nothing listens then.
            return bool(sock.getsockname() != sock.getpeername())
    except OSError:
        return False


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _launch(
    config: ServicesConfig,
    name: str,
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str],
    cwd: Path,
    ports: Iterable[int],
    ready: Callable[[], bool],
) -> int:
    """Start ``argv`` in the background unless already running; wait until ``ready()``."""
    pid = read_pid(config, name)
    if pid is None:
        busy = _wait_ports_closed(config.host, ports, PORT_FREE_TIMEOUT)
        if busy:
            raise ServiceError(
                f"{name}: port {', '.join(map(str, busy))} on {config.host} is already in use "
                "by another process (set the OWDEDUP_*_PORT variables to use others)"
            )
        config.run_dir.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        log = config.log_file(name)
        with log.open("ab") as out:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"\n=== owdedup services: start {name} {stamp} ===\n".encode())
            out.flush()
            process = subprocess.Popen(
                [str(part) for part in argv],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        pid = process.pid
        _CHILDREN[pid] = process
        config.pid_file(name).write_text(f"{pid}\n")
        say(f"{name}: started (pid {pid}, log {log})")
    else:
        process = None
        say(f"{name}: already running (pid {pid})")
    deadline = time.monotonic() + START_TIMEOUT[name]
    while True:
        if ready():
            say(f"{name}: ready")
            return pid
        alive = _proc_alive(pid, _marker(name), starting=process is not None)
        exited = process.poll() if process is not None else None
        if exited is not None or not alive:
            config.pid_file(name).unlink(missing_ok=True)
            code = f" with exit code {exited}" if exited is not None else ""
            raise ServiceError(
                f"{name} exited{code} while starting; last lines of "
                f"{config.log_file(name)}:\n{tail_file(config.log_file(name))}"
            )
        if time.monotonic() > deadline:
            stop(config, name, quiet=True)
            raise ServiceError(
                f"{name} was not ready after {START_TIMEOUT[name]:.0f}s (stopped it); "
                f"last lines of {config.log_file(name)}:\n{tail_file(config.log_file(name))}"
            )
        time.sleep(0.3)


def stop(config: ServicesConfig, name: str, *, quiet: bool = False) -> bool:
    """Stop service ``name`` (SIGTERM to its process group, SIGKILL after a grace period).
    Returns False when it was not running."""
    pid = read_pid(config, name)
    if pid is None:
        config.pid_file(name).unlink(missing_ok=True)
        if not quiet:
            say(f"{name}: not running")
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    # The pid was checked to be this service's above; from here on only its existence
    # matters (see _proc_exists), so a pid reused in these few seconds is the only risk.
    while _proc_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _proc_exists(pid):
        say(f"{name}: still running after {STOP_TIMEOUT:.0f}s, killing pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10.0
        while _proc_exists(pid) and time.monotonic() < kill_deadline:
            time.sleep(0.1)
    config.pid_file(name).unlink(missing_ok=True)
    busy = _wait_ports_closed(config.host, service_ports(config, name), PORT_FREE_TIMEOUT)
    if busy and not quiet:
        say(f"{name}: warning: port {', '.join(map(str, busy))} still answers after the stop")
    if not quiet:
        say(f"{name}: stopped")
    return True


def logs(config: ServicesConfig, name: str, lines: int = 50) -> str:
    """The last ``lines`` lines of service ``name``'s log file."""
    check_names([name])
    return tail_file(config.log_file(name), lines)


# CouchDB API (pouchdb-server) -------------------------------------------------------------


def start_couchdb(config: ServicesConfig) -> int:
    if found := find_couchdb():
        say(f"couchdb: note: {found} is on PATH but not managed here; "
            "starting pouchdb-server")
    require("node", "run pouchdb-server")
    workdir = config.data_dir / "pouchdb-server"
    dbs = config.data_dir / "couchdb"
    dbs.mkdir(parents=True, exist_ok=True)
    argv: list[str | Path] = [
        config.pouchdb_bin,
        "--host", config.host,
        "--port", str(config.couchdb_port),
        "--dir", dbs,
        "--config", workdir / "config.json",
    ]
    return _launch(
        config, "couchdb", argv, env=dict(os.environ), cwd=workdir,
        ports=service_ports(config, "couchdb"), ready=lambda: _http_ok(config.records_url + "/"),
    )


# Kafka ------------------------------------------------------------------------------------

LOG4J2_BROKER = """\
# Generated by owdedup.services: broker logs go to stdout (the service's log file).
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""

LOG4J2_TOOLS = """\
# Generated by owdedup.services: the Kafka command-line tools only report problems.
status = warn
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
"""


def kafka_dir(config: ServicesConfig) -> Path:
    """Generated broker configuration (server.properties, log4j2 files, cluster id)."""
    return config.state / "kafka"


def kafka_properties(config: ServicesConfig) -> str:
    host, port, cport = config.host, config.kafka_port, config.kafka_controller_port
    return "\n".join([
        "# Generated by owdedup.services: single-node KRaft broker+controller.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers={host}:{cport}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        f"advertised.listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={config.data_dir / 'kafka'}",
        "num.partitions=1",
        "auto.create.topics.enable=true",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=168",
        "",
    ])


def kafka_java(config: ServicesConfig, main: str, *args: str | Path, tools: bool = True,
               heap: str = "256m") -> list[str]:
    """A java command line running ``main`` on the installed Kafka classpath."""
    log4j = kafka_dir(config) / ("tools-log4j2.properties" if tools else "log4j2.properties")
    return [
        require("java", "run Kafka"),
        f"-Xmx{heap}",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        str(config.kafka_libs / "*"),
        main,
        *[str(arg) for arg in args],
    ]


def _java_major() -> int:
    out = run_tool("java -version", [require("java", "run Kafka"), "-version"])
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not found:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def random_cluster_id() -> str:
    """A Kafka cluster id as ``kafka-storage random-uuid`` makes it (URL-safe base64 of 16
    random bytes, never starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _write_kafka_config(config: ServicesConfig) -> Path:
    folder = kafka_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log4j2.properties").write_text(LOG4J2_BROKER)
    (folder / "tools-log4j2.properties").write_text(LOG4J2_TOOLS)
    properties = folder / "server.properties"
    properties.write_text(kafka_properties(config))
    return properties


def _format_kafka(config: ServicesConfig, properties: Path) -> None:
    """Format the KRaft storage once (kept across restarts)."""
    if (config.data_dir / "kafka" / "meta.properties").exists():
        return
    id_file = kafka_dir(config) / "cluster-id"
    if not id_file.exists():
        id_file.write_text(random_cluster_id() + "\n")
    cluster_id = id_file.read_text().strip()
    say(f"kafka: formatting storage in {config.data_dir / 'kafka'} (cluster id {cluster_id})")
    run_tool(
        "kafka-storage format",
        kafka_java(config, STORAGE_TOOL, "format", "-t", cluster_id, "-c", properties,
                   "--standalone"),
    )


@dataclass(frozen=True)
class KafkaMetadata:
    brokers: tuple[tuple[int, str, int], ...]
    topics: tuple[str, ...]


class _Reader:
    """Big-endian reader for Kafka's (non-flexible) wire format."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(">" + fmt, self.data, self.offset)
        self.offset += struct.calcsize(">" + fmt)
        return tuple(int(value) for value in values)

    def string(self) -> str | None:
        (length,) = self.take("h")
        if length < 0:
            return None
        text = self.data[self.offset:self.offset + length].decode()
        self.offset += length
        return text

    def int_array(self) -> None:
        (count,) = self.take("i")
        self.offset += 4 * max(count, 0)


def kafka_metadata(host: str, port: int, timeout: float = 2.0) -> KafkaMetadata:
    """Brokers and topic names from a Metadata request (v4, the oldest Kafka 4 accepts)."""
    client = b"owdedup-services"
    header = struct.pack(">hhih", 3, 4, 1, len(client)) + client
    body = struct.pack(">ib", -1, 0)  # all topics, no auto-creation
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        reader = _Reader(_recv_exact(sock, size))
    reader.take("ii")  # correlation id, throttle time
    brokers: list[tuple[int, str, int]] = []
    for _ in range(reader.take("i")[0]):
        (node,) = reader.take("i")
        name = reader.string() or ""
        (broker_port,) = reader.take("i")
        reader.string()  # rack
        brokers.append((node, name, broker_port))
    reader.string()  # cluster id
    reader.take("i")  # controller id
    topics: list[str] = []
    for _ in range(reader.take("i")[0]):
        (error,) = reader.take("h")
        topic = reader.string() or ""
        reader.take("b")  # is_internal
        for _ in range(reader.take("i")[0]):
            reader.take("hii")  # error, partition, leader
            reader.int_array()  # replicas
            reader.int_array()  # in-sync replicas
        if error == 0:
            topics.append(topic)
    return KafkaMetadata(tuple(brokers), tuple(topics))


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks += chunk
    return bytes(chunks)


def kafka_ready(config: ServicesConfig) -> bool:
    try:
        return bool(kafka_metadata(config.host, config.kafka_port).brokers)
    except (OSError, struct.error, UnicodeDecodeError):
        return False


def start_kafka(config: ServicesConfig) -> int:
    if read_pid(config, "kafka") is None and _java_major() < 17:
        raise ServiceError(f"Kafka {KAFKA_VERSION} needs Java 17 or newer on PATH")
    properties = _write_kafka_config(config)
    _format_kafka(config, properties)
    argv = kafka_java(config, KAFKA_CLASS, properties, tools=False, heap="1g")
    pid = _launch(
        config, "kafka", argv, env=dict(os.environ), cwd=kafka_dir(config),
        ports=service_ports(config, "kafka"),
        ready=lambda: kafka_ready(config),
    )
    ensure_topic(config, config.topic)
    return pid


def ensure_topic(config: ServicesConfig, topic: str, partitions: int = 1) -> None:
    """Create ``topic`` if it does not exist (consumers may subscribe before the first put)."""
    if topic in kafka_metadata(config.host, config.kafka_port).topics:
        return
    run_tool(
        f"kafka-topics --create {topic}",
        kafka_java(config, TOPIC_TOOL, "--bootstrap-server", config.kafka_bootstrap,
                   "--create", "--if-not-exists", "--topic", topic,
                   "--partitions", str(partitions), "--replication-factor", "1"),
        timeout=120,
    )
    say(f"kafka: created topic {topic}")


# MinIO ------------------------------------------------------------------------------------

_ALPHABET = string.ascii_letters + string.digits


def minio_credentials(config: ServicesConfig, *, create: bool = False) -> tuple[str, str]:
    """MinIO's root (access key, secret key), generated once into a 0600 file."""
    path = config.credentials_file
    if not path.exists():
        if not create:
            raise ServiceError(
                f"no MinIO credentials in {path}: run `owdedup services up` first"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        access = "owdedup-" + "".join(secrets.choice(_ALPHABET) for _ in range(8))
        secret = "".join(secrets.choice(_ALPHABET) for _ in range(40))
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"access_key": access, "secret_key": secret}, handle)
    data = json.loads(path.read_text())
    return str(data["access_key"]), str(data["secret_key"])


def minio_env(config: ServicesConfig) -> dict[str, str]:
    """The server's environment: root credentials and the Kafka notification target."""
    access, secret = minio_credentials(config, create=True)
    target = config.kafka_target_id
    env = {key: value for key, value in os.environ.items() if not key.startswith("MINIO_")}
    env.update({
        "MINIO_ROOT_USER": access,
        "MINIO_ROOT_PASSWORD": secret,
        "MINIO_UPDATE": "off",
        f"MINIO_NOTIFY_KAFKA_ENABLE_{target}": "on",
        f"MINIO_NOTIFY_KAFKA_BROKERS_{target}": config.kafka_bootstrap,
        f"MINIO_NOTIFY_KAFKA_TOPIC_{target}": config.topic,
        f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{target}": str(config.data_dir / "minio-events"),
    })
    return env


def mc_env(config: ServicesConfig) -> dict[str, str]:
    """Environment for ``mc``: its own config dir in the cache and the alias as MC_HOST_*,
    so the user's ``~/.mc`` is untouched and no credential lands in a config file."""
    access, secret = minio_credentials(config)
    host = f"http://{access}:{secret}@{config.host}:{config.minio_port}"
    return {
        "MC_CONFIG_DIR": str(config.mc_config_dir),
        f"MC_HOST_{config.mc_alias}": host,
        "MC_NO_COLOR": "1",
        "MC_DISABLE_PAGER": "1",
    }


def mc(config: ServicesConfig, *args: str, timeout: float = 60) -> str:
    """Run the installed ``mc`` against this MinIO (alias ``config.mc_alias``)."""
    config.mc_config_dir.mkdir(parents=True, exist_ok=True)
    return run_tool(
        f"mc {args[0] if args else ''}".strip(),
        [config.mc_bin, *args],
        env=mc_env(config),
        timeout=timeout,
    )


def _mc_json(output: str) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def setup_buckets(config: ServicesConfig) -> None:
    """Create the buckets and subscribe the input bucket's puts to the Kafka target."""
    alias = config.mc_alias
    for bucket in dict.fromkeys([config.in_bucket, config.out_bucket]):
        mc(config, "--json", "mb", "--ignore-existing", f"{alias}/{bucket}")
    say(f"minio: buckets {config.in_bucket}, {config.out_bucket} ready")
    source = f"{alias}/{config.in_bucket}"
    events = _mc_json(mc(config, "--json", "event", "ls", source))
    arn = config.kafka_target_arn
    if any(str(event.get("arn")) == arn for event in events):
        say(f"minio: {config.in_bucket} already sends put events to {arn}")
        return
    mc(config, "event", "add", source, arn, "--event", "put")
    say(f"minio: {config.in_bucket} sends put events to {arn} (topic {config.topic})")


def start_minio(config: ServicesConfig) -> int:
    data = config.data_dir / "minio"
    data.mkdir(parents=True, exist_ok=True)
    (config.data_dir / "minio-events").mkdir(parents=True, exist_ok=True)
    argv: list[str | Path] = [
        config.minio_bin, "server", data,
        "--address", f"{config.host}:{config.minio_port}",
        "--console-address", f"{config.host}:{config.minio_console_port}",
    ]
    pid = _launch(
        config, "minio", argv, env=minio_env(config), cwd=config.data_dir,
        ports=service_ports(config, "minio"),
        ready=lambda: _http_ok(config.store_url + "/minio/health/live"),
    )
    setup_buckets(config)
    return pid


# All services -----------------------------------------------------------------------------

STARTERS: dict[str, Callable[[ServicesConfig], int]] = {
    "couchdb": start_couchdb,
    "kafka": start_kafka,
    "minio": start_minio,
}


def start(config: ServicesConfig, name: str) -> int:
    """Start one service (installing it first if needed); returns its pid."""
    check_names([name])
    if not is_installed(config, name):
        install(config, [name])
    return STARTERS[name](config)


def up(config: ServicesConfig, only: Iterable[str] | None = None) -> None:
    """Install what is missing and start the services (all by default) in dependency order:
    couchdb, kafka, then minio (whose notification target is Kafka)."""
    names = check_names(only)
    install(config, names)
    for name in names:
        STARTERS[name](config)


def down(config: ServicesConfig, only: Iterable[str] | None = None) -> None:
    """Stop the services (all by default), MinIO first."""
    for name in reversed(check_names(only)):
        stop(config, name)


def _endpoint(config: ServicesConfig, name: str) -> str:
    return {
        "couchdb": config.records_url,
        "kafka": config.kafka_bootstrap,
        "minio": f"{config.store_url} (console :{config.minio_console_port})",
    }[name]


def _version(name: str) -> str:
    return {
        "couchdb": f"pouchdb-server {POUCHDB_SERVER_VERSION}",
        "kafka": f"kafka {KAFKA_VERSION}",
        "minio": f"minio {_pseudo_label(MINIO_VERSION)}",
    }[name]


def _pseudo_label(version: str) -> str:
    """``v0.0.0-20260212201848-7aac2a2c5b7c`` -> ``2026-02-12 7aac2a2c5b7c``."""
    parts = version.split("-")
    if len(parts) == 3 and len(parts[1]) == 14:
        stamp = parts[1]
        return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {parts[2]}"
    return version


def _ready(config: ServicesConfig, name: str) -> bool:
    if name == "couchdb":
        return _http_ok(config.records_url + "/")
    if name == "kafka":
        return kafka_ready(config)
    return _http_ok(config.store_url + "/minio/health/live")


def status(config: ServicesConfig, name: str) -> ServiceStatus:
    check_names([name])
    pid = read_pid(config, name)
    return ServiceStatus(
        name=name,
        running=pid is not None,
        ready=pid is not None and _ready(config, name),
        pid=pid,
        endpoint=_endpoint(config, name),
        version=_version(name),
        log=config.log_file(name),
    )


def status_all(config: ServicesConfig) -> list[ServiceStatus]:
    return [status(config, name) for name in SERVICES]


# Environment for clients ------------------------------------------------------------------


def env_vars(config: ServicesConfig) -> dict[str, str]:
    """What owdedup's clients need to reach these services (includes the MinIO secret)."""
    access, secret = minio_credentials(config)
    return {
        "OWDEDUP_STORE": config.store_url,
        "OWDEDUP_STORE_ACCESS_KEY": access,
        "OWDEDUP_STORE_SECRET_KEY": secret,
        "OWDEDUP_RECORDS": config.records_url,
        "OWDEDUP_KAFKA": config.kafka_bootstrap,
        "OWDEDUP_IN_BUCKET": config.in_bucket,
        "OWDEDUP_OUT_BUCKET": config.out_bucket,
        "OWDEDUP_KAFKA_TOPIC": config.topic,
    }


def env_exports(config: ServicesConfig) -> list[str]:
    """``export NAME=value`` lines for ``eval "$(owdedup services env)"``."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env_vars(config).items()]
