"""owdedup.services without the real services: config, generated files, wire format, errors."""

from __future__ import annotations

import base64
import contextlib
import json
import shlex
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from owdedup.runtime.errors import ConfigError
from owdedup.services import (
    ServiceError,
    ServicesConfig,
    couchdb,
    env_exports,
    is_installed,
    kafka,
    launcher,
    logs,
    minio,
)
from owdedup.services import processes as proc
from owdedup.services.install import kafka_pom, pouchdb_package_json
from owdedup.services.registry import check_names
from owdedup.services.versions import KAFKA_ARTIFACTS
from tests.tooling import listen_ports, need_command


@pytest.fixture
def config(tmp_path: Path) -> ServicesConfig:
    return ServicesConfig(home=tmp_path / "home", state=tmp_path / "state")


def test_config_defaults_and_overrides(tmp_path: Path) -> None:
    default = ServicesConfig.from_env({"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)})
    assert default.home == tmp_path / "owdedup" / "services"
    assert default.state == default.home
    assert (default.minio_port, default.kafka_port, default.couchdb_port) == (9000, 9092, 5984)
    custom = ServicesConfig.from_env({
        "OWDEDUP_SERVICES_HOME": str(tmp_path / "h"),
        "OWDEDUP_SERVICES_STATE": str(tmp_path / "s"),
        "OWDEDUP_MINIO_PORT": "19000",
        "OWDEDUP_IN_BUCKET": "photos",
        "OWDEDUP_KAFKA_TOPIC": "uploads",
    })
    assert custom.home == tmp_path / "h"
    assert custom.run_dir == tmp_path / "s" / "run"
    assert custom.store_url == "http://127.0.0.1:19000"
    assert custom.in_bucket == "photos"
    assert custom.kafka_target_arn == "arn:minio:sqs::OWDEDUP:kafka"


@pytest.mark.parametrize(
    "env",
    [{"OWDEDUP_KAFKA_PORT": "x"}, {"OWDEDUP_IN_BUCKET": "in"}, {"OWDEDUP_KAFKA_TOPIC": "a b"}],
)
def test_config_rejects_bad_values(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ServicesConfig.from_env({"OWDEDUP_SERVICES_HOME": str(tmp_path), **env})


def test_credentials_file_is_private_and_env_exports_evaluate(config: ServicesConfig) -> None:
    with pytest.raises(ServiceError, match="services up"):
        env_exports(config)
    access, secret = minio.minio_credentials(config, create=True)
    assert minio.minio_credentials(config, create=True) == (access, secret)  # generated once
    assert stat.S_IMODE(config.credentials_file.stat().st_mode) == 0o600
    assert len(secret) >= 32
    admin, password = couchdb.couchdb_credentials(config, create=True)
    assert couchdb.couchdb_credentials(config, create=True) == (admin, password)
    assert stat.S_IMODE(config.couchdb_credentials_file.stat().st_mode) == 0o600
    assert len(password) >= 32
    lines = env_exports(config)
    values = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines)
    assert values == {
        "OWDEDUP_STORE": "http://127.0.0.1:9000",
        "OWDEDUP_STORE_ACCESS_KEY": access,
        "OWDEDUP_STORE_SECRET_KEY": secret,
        "OWDEDUP_RECORDS": "http://127.0.0.1:5984",
        "OWDEDUP_RECORDS_USERNAME": admin,  # the record-store options the runtime reads
        "OWDEDUP_RECORDS_PASSWORD": password,
        "OWDEDUP_KAFKA": "127.0.0.1:9092",
        "OWDEDUP_IN_BUCKET": "inbucket",
        "OWDEDUP_OUT_BUCKET": "outbucket",
        "OWDEDUP_KAFKA_TOPIC": "owdedup-uploads",
    }
    env = minio.minio_env(config)
    assert env["MINIO_NOTIFY_KAFKA_TOPIC_OWDEDUP"] == "owdedup-uploads"
    assert env["MINIO_NOTIFY_KAFKA_QUEUE_DIR_OWDEDUP"].startswith(str(config.state))
    # Without these MinIO can answer a PUT whose event it never sends (a start's first
    # moments, a stop's in-memory queue): the restart test in test_pipeline_e2e lost one.
    assert env["MINIO_SYNC_BOOT"] == "on"
    assert env["MINIO_API_SYNC_EVENTS"] == "on"
    assert secret not in json.dumps(minio.mc_env(config)["MC_CONFIG_DIR"])


def test_generated_install_files() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.fromstring(kafka_pom())
    found = {
        (dep.findtext("m:groupId", namespaces=ns), dep.findtext("m:artifactId", namespaces=ns),
         dep.findtext("m:version", namespaces=ns))
        for dep in pom.iterfind("m:dependencies/m:dependency", ns)
    }
    assert found == set(KAFKA_ARTIFACTS)
    package = json.loads(pouchdb_package_json())
    assert package["dependencies"] == {"pouchdb-server": "4.2.0"}
    assert package["allowScripts"]["leveldown"] is True


def test_kafka_properties_and_cluster_id(config: ServicesConfig) -> None:
    props = kafka.kafka_properties(config)
    assert "process.roles=broker,controller" in props
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in props
    assert f"log.dirs={config.data_dir / 'kafka'}" in props
    cluster = kafka.random_cluster_id()
    assert len(cluster) == 22 and not cluster.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster + "==")) == 16


def _metadata_response() -> bytes:
    def string(text: str) -> bytes:
        return struct.pack(">h", len(text)) + text.encode()

    body = struct.pack(">ii", 7, 0)  # correlation id, throttle
    body += struct.pack(">i", 1) + struct.pack(">i", 1) + string("127.0.0.1")
    body += struct.pack(">i", 9092) + struct.pack(">h", -1)  # port, null rack
    body += string("cluster") + struct.pack(">i", 1)
    body += struct.pack(">i", 1) + struct.pack(">h", 0) + string("owdedup-uploads") + b"\0"
    body += struct.pack(">i", 1) + struct.pack(">hii", 0, 0, 1)
    body += struct.pack(">ii", 1, 1) + struct.pack(">ii", 1, 1)  # replicas, isr
    return struct.pack(">i", len(body)) + body


def test_kafka_metadata_parses_a_v4_response() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        requests: list[bytes] = []

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                size = struct.unpack(">i", conn.recv(4))[0]
                requests.append(conn.recv(size))
                conn.sendall(_metadata_response())

        thread = threading.Thread(target=answer)
        thread.start()
        meta = kafka.kafka_metadata("127.0.0.1", port)
        thread.join(5)
    assert struct.unpack(">hh", requests[0][:4]) == (3, 4)  # Metadata v4
    assert meta.brokers == ((1, "127.0.0.1", 9092),)
    assert meta.topics == ("owdedup-uploads",)


def test_unknown_service_and_nothing_installed(config: ServicesConfig) -> None:
    assert check_names(None) == ["couchdb", "kafka", "minio"]
    assert check_names(["minio", "couchdb"]) == ["couchdb", "minio"]
    with pytest.raises(ServiceError, match="unknown service redis"):
        check_names(["redis"])
    assert not any(is_installed(config, name) for name in ("couchdb", "kafka", "minio"))


def test_status_of_stopped_services(config: ServicesConfig) -> None:
    statuses = proc.status_all(config)
    assert [(s.name, s.state, s.pid) for s in statuses] == [
        ("couchdb", "stopped", None), ("kafka", "stopped", None), ("minio", "stopped", None)
    ]
    assert launcher.stop(config, "kafka") is False


@pytest.fixture
def node() -> str:
    return need_command("node")


def _fake_pouchdb(config: ServicesConfig, script: str) -> None:
    config.pouchdb_bin.parent.mkdir(parents=True)
    config.pouchdb_bin.write_text("#!/bin/sh\n" + script)
    config.pouchdb_bin.chmod(0o755)


@pytest.mark.usefixtures("node")
def test_failed_start_names_the_service_and_shows_its_log(config: ServicesConfig) -> None:
    _fake_pouchdb(config, "echo 'cannot open the database folder'\nexit 3\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = ServicesConfig(home=config.home, state=config.state, couchdb_port=port)
    with pytest.raises(ServiceError) as error:
        couchdb.start_couchdb(cfg)
    message = str(error.value)
    assert message.startswith("couchdb exited with exit code 3")
    assert "cannot open the database folder" in message
    assert "cannot open the database folder" in logs(cfg, "couchdb", 5)
    assert not cfg.pid_file("couchdb").exists()


@pytest.mark.usefixtures("node")
def test_busy_port_is_reported(config: ServicesConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "PORT_FREE_TIMEOUT", 0.5)
    _fake_pouchdb(config, "exit 0\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(64)  # never accepts: room for every probe of the wait
        cfg = ServicesConfig(
            home=config.home, state=config.state, couchdb_port=busy.getsockname()[1]
        )
        with pytest.raises(ServiceError, match=r"couchdb: port \d+ on 127.0.0.1 is already in use"):
            couchdb.start_couchdb(cfg)


#: The stand-ins' request handler: it answers every GET and PUT (a start makes the record
#: database admin-only with two PUTs) and remembers nothing.
ANSWER = """\
import http.server
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(201); self.end_headers(); self.wfile.write(b"{}")
    do_PUT = do_GET
"""
#: A stand-in server under the pouchdb name: ``"$2" "$4"`` are its --host and --port.
ANSWERING_SERVER = ANSWER + """\
import sys
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Answer).serve_forever()
"""


@pytest.mark.usefixtures("node")
def test_start_status_stop_of_a_process(config: ServicesConfig) -> None:
    """The bookkeeping with a stand-in server: python's http.server under the pouchdb name."""
    _fake_pouchdb(
        config,
        f'{shlex.quote(sys.executable)} -c {shlex.quote(ANSWERING_SERVER)} "$2" "$4"\n',
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = ServicesConfig(home=config.home, state=config.state, couchdb_port=port)
    pid = couchdb.start_couchdb(cfg)
    try:
        assert launcher.read_pid(cfg, "couchdb") == pid
        assert couchdb.start_couchdb(cfg) == pid  # idempotent
        assert proc.status(cfg, "couchdb").ready
    finally:
        assert launcher.stop(cfg, "couchdb") is True
    assert proc.status(cfg, "couchdb").state == "stopped"
    assert not cfg.pid_file("couchdb").exists()


#: A stand-in server that, on SIGTERM, turns into another program (so its command line no
#: longer names the service) while still holding its listening socket for LINGER seconds:
#: what a real server looks like while it exits (memory released, files not yet closed).
LINGERING_SERVER = ANSWER + """\
import os, signal, sys
from http.server import HTTPServer

server = HTTPServer((sys.argv[1], int(sys.argv[2])), Answer)


def linger(*_args: object) -> None:
    os.set_inheritable(server.socket.fileno(), True)
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(LINGER)"])


signal.signal(signal.SIGTERM, linger)
server.serve_forever()
"""


@pytest.mark.usefixtures("node")
def test_stop_returns_only_once_the_ports_are_closed(config: ServicesConfig) -> None:
    """Regression: stop used to return as soon as the command line stopped matching, and
    an immediate start then found the port still held by the exiting process."""
    script = config.home / "pouchdb-server-standin.py"
    script.parent.mkdir(parents=True)
    script.write_text(LINGERING_SERVER.replace("LINGER", "1.5"))
    config.pouchdb_bin.parent.mkdir(parents=True)
    config.pouchdb_bin.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(script))} "$2" "$4"\n'
    )
    config.pouchdb_bin.chmod(0o755)
    port = listen_ports(1)[0]
    cfg = ServicesConfig(home=config.home, state=config.state, couchdb_port=port)
    for _ in range(2):  # start, stop, and start again at once on the same port
        couchdb.start_couchdb(cfg)
        assert launcher.stop(cfg, "couchdb") is True
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def _wait_listening(port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.mark.usefixtures("node")
def test_start_waits_for_a_port_that_is_being_released(config: ServicesConfig) -> None:
    _fake_pouchdb(
        config, f'{shlex.quote(sys.executable)} -c {shlex.quote(ANSWERING_SERVER)} "$2" "$4"\n')
    port = listen_ports(1)[0]
    cfg = ServicesConfig(home=config.home, state=config.state, couchdb_port=port)
    # Another server, exiting a moment after the start begins, holds the port until then.
    holder = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    release = threading.Timer(1.0, holder.terminate)
    try:
        _wait_listening(port)
        release.start()
        assert couchdb.start_couchdb(cfg) > 0
        assert proc.status(cfg, "couchdb").ready
    finally:
        release.cancel()
        holder.kill()
        holder.wait()
        launcher.stop(cfg, "couchdb", quiet=True)


# -- the CouchDB-API server's admin (issue 8, item 2) -------------------------------------

def test_the_admin_is_written_into_the_server_config_keeping_its_other_sections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"couchdb": {"uuid": "kept"}, "admins": {"old": "-pbkdf2-x"}}))
    couchdb.write_admin_config(path, "owdedup", "pw")
    assert json.loads(path.read_text()) == {"couchdb": {"uuid": "kept"},
                                            "admins": {"owdedup": "pw"}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_pouchdb_mends_apply_once_and_refuse_an_unknown_file(tmp_path: Path) -> None:
    from owdedup.services.pouchdb_mends import MENDS, apply_mends

    for mend in MENDS:
        path = tmp_path / mend.file
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text() if path.exists() else "// head\n"
        path.write_text(text + mend.shipped + "// tail\n")
    apply_mends(tmp_path)
    once = {mend.file: (tmp_path / mend.file).read_text() for mend in MENDS}
    assert all(mend.mended in once[mend.file] and mend.shipped not in once[mend.file]
               for mend in MENDS)
    apply_mends(tmp_path)  # idempotent
    assert {mend.file: (tmp_path / mend.file).read_text() for mend in MENDS} == once
    (tmp_path / MENDS[0].file).write_text("// another version\n")
    with pytest.raises(ServiceError, match="reinstall"):
        apply_mends(tmp_path)


def test_the_data_folders_are_private(config: ServicesConfig, tmp_path: Path) -> None:
    config.data_dir.mkdir(parents=True)
    config.data_dir.chmod(0o755)
    (config.data_dir / "minio").mkdir(mode=0o755)
    with contextlib.suppress(ServiceError, OSError):
        minio.start_minio(config)  # no MinIO is installed here: only the folders are made
    for folder in (config.data_dir, config.data_dir / "minio", config.data_dir / "minio-events"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.usefixtures("node")
def test_a_server_whose_database_cannot_be_secured_is_stopped(config: ServicesConfig) -> None:
    """python's http.server answers PUT with 501: the start fails and stops the server."""
    _fake_pouchdb(config, f'{shlex.quote(sys.executable)} -m http.server --bind "$2" "$4"\n')
    port = listen_ports(1)[0]
    cfg = ServicesConfig(home=config.home, state=config.state, couchdb_port=port)
    with pytest.raises(ServiceError, match="creating database owdedup answered HTTP 501"):
        couchdb.start_couchdb(cfg)
    assert proc.status(cfg, "couchdb").state == "stopped"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


class _FakeService:
    """A service defined here: the registry alone makes it known to up/status/logs."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def install(self, config: ServicesConfig) -> list[str]:
        self.calls.append("install")
        return ["fake"]

    def installed(self, config: ServicesConfig) -> bool:
        return "install" in self.calls

    def start(self, config: ServicesConfig) -> int:
        self.calls.append("start")
        return 4242

    def ready(self, config: ServicesConfig) -> bool:
        return True

    def endpoint(self, config: ServicesConfig) -> str:
        return "fake://127.0.0.1:1"

    def version(self) -> str:
        return "fake 1.0"


def test_every_service_goes_through_the_one_registry(
    config: ServicesConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from owdedup.services import registry

    assert registry.SERVICES == ("couchdb", "kafka", "minio")
    assert launcher.service_ports(config, "kafka") == (config.kafka_port,
                                                       config.kafka_controller_port)
    for service in registry.REGISTRY:
        assert isinstance(service.version(), str) and service.version()
        assert service.endpoint(config)
    assert registry.service("kafka").endpoint(config) == config.kafka_bootstrap
    fake = _FakeService()
    monkeypatch.setattr(registry, "REGISTRY", (*registry.REGISTRY, fake))
    monkeypatch.setattr(registry, "SERVICES", (*registry.SERVICES, "fake"))
    monkeypatch.setitem(launcher._PROCESSES, "fake",
                        launcher.ProcessSpec("no-such-fake-service", lambda _config: (1,)))
    proc.up(config, ["fake"])
    assert fake.calls == ["install", "start"]
    assert proc.start(config, "fake") == 4242 and fake.calls[-1] == "start"
    status = proc.status(config, "fake")
    assert (status.endpoint, status.version, status.state) == ("fake://127.0.0.1:1", "fake 1.0",
                                                               "stopped")
    assert "fake" in [s.name for s in proc.status_all(config)]
    with pytest.raises(ServiceError, match="unknown service redis; choose from couchdb, kafka, "
                                           "minio, fake"):
        proc.logs(config, "redis")
