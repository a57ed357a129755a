"""The MinIO service: the MinIO server with a Kafka notification target, run as a background
process on 127.0.0.1 (see :mod:`owdedup.services.launcher`); after it is up, ``mc`` creates
the buckets and subscribes the input bucket's puts to that target.

MinIO's root credentials are generated on the first ``up`` and kept in a 0600 file; they are
printed only by :func:`owdedup.services.processes.env_exports` (meant for
``eval "$(owdedup services env)"``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from owdedup.runtime.atomic import private_dir
from owdedup.services.config import ServicesConfig
from owdedup.services.install import install_mc, install_minio, minio_installed, pseudo_label
from owdedup.services.launcher import (
    ProcessSpec,
    http_ok,
    launch,
    register_process,
    service_ports,
)
from owdedup.services.tools import generated_credentials, random_token, run_tool, say
from owdedup.services.versions import MINIO_VERSION


def minio_credentials(config: ServicesConfig, *, create: bool = False) -> tuple[str, str]:
    """MinIO's root (access key, secret key), generated once into a 0600 file."""
    data = generated_credentials(
        config.credentials_file,
        lambda: {"access_key": "owdedup-" + random_token(8), "secret_key": random_token(40)},
        create=create, service="MinIO",
    )
    return data["access_key"], data["secret_key"]


#: The server settings without which an upload can be acknowledged and its event lost.
MINIO_EVENT_GUARANTEES: dict[str, str] = {"MINIO_SYNC_BOOT": "on", "MINIO_API_SYNC_EVENTS": "on"}


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
        # No acknowledged upload without its event, across restarts. MinIO answers S3 calls
        # before it has loaded the buckets' notification rules (a PUT then sends nothing)
        # unless boot is synchronous, and by default queues an event in memory after
        # answering the PUT (a stop then loses it) unless events are synchronous: written
        # to the queue dir above before the PUT is answered.
        **MINIO_EVENT_GUARANTEES,
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


def minio_ready(config: ServicesConfig) -> bool:
    return http_ok(config.store_url + "/minio/health/live")


def start_minio(config: ServicesConfig) -> int:
    # The objects and the queued events are the users' data: nobody else's to read.
    private_dir(config.data_dir)
    data = private_dir(config.data_dir / "minio")
    private_dir(config.data_dir / "minio-events")
    argv: list[str | Path] = [
        config.minio_bin, "server", data,
        "--address", f"{config.host}:{config.minio_port}",
        "--console-address", f"{config.host}:{config.minio_console_port}",
    ]
    pid = launch(
        config, "minio", argv, env=minio_env(config), cwd=config.data_dir,
        ports=service_ports(config, "minio"),
        ready=lambda: minio_ready(config),
    )
    setup_buckets(config)
    return pid


class MinIO:
    """The MinIO server (and ``mc``, which sets up its buckets) as a
    :class:`owdedup.services.registry.Service`."""

    name = "minio"

    def install(self, config: ServicesConfig) -> list[str]:
        return [step for step, installer in (("minio", install_minio), ("mc", install_mc))
                if installer(config)]

    def installed(self, config: ServicesConfig) -> bool:
        return minio_installed(config)

    def start(self, config: ServicesConfig) -> int:
        return start_minio(config)

    def ready(self, config: ServicesConfig) -> bool:
        return minio_ready(config)

    def endpoint(self, config: ServicesConfig) -> str:
        return f"{config.store_url} (console :{config.minio_console_port})"

    def version(self) -> str:
        return f"minio {pseudo_label(MINIO_VERSION)}"


SERVICE = MinIO()
register_process("minio", ProcessSpec(
    "minio", lambda config: (config.minio_port, config.minio_console_port)))
