"""What the tests that run the real ``deploy.sh`` share: a copy of the project to deploy
from, ``deploy.sh`` itself (checked never to print a credential), and ``owdedup serve`` as a
separate process, the way a developer runs it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.serve.conftest import Client
from tests.service_fixtures import PROJECT
from tests.tooling import listen_ports

#: deploy.sh's inputs that hold credentials: none may appear in its output.
SECRET_VARIABLES = ("OW_AUTH", "OWDEDUP_STORE_ACCESS_KEY", "OWDEDUP_STORE_SECRET_KEY",
                    "OWDEDUP_RECORDS_PASSWORD")


def copy_project(root: Path) -> Path:
    """What deploy.sh needs of the project, copied into ``root`` (deploy.sh builds into the
    folder it runs from: the checkout stays clean)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("deploy.sh", "manifest.yaml"):
        shutil.copy2(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "actions", root / "actions",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def run_deploy_sh(project: Path, env: dict[str, str], *args: str
                  ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", str(project / "deploy.sh"), *args], cwd=project, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=1800, check=False)
    output = done.stdout + done.stderr
    for name in SECRET_VARIABLES:
        if env.get(name):
            assert env[name] not in output, f"{name}'s value in deploy.sh's output"
    return done


@contextlib.contextmanager
def serve_process(root: Path, auth: str, runtime_site: Path) -> Iterator[Client]:
    """Start ``owdedup serve`` (its state and log under ``root``; the key through the
    environment, not its command line), wait until it answers, yield a client, stop it."""
    port = listen_ports(1)[0]
    log_path = root / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "owdedup", "serve", "--port", str(port), "--state",
             str(root / "state"), "--runtime-site", str(runtime_site)],
            env={**os.environ, "OWDEDUP_SERVE_AUTH": auth}, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )
        try:
            client = Client(f"http://127.0.0.1:{port}", auth=auth)
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError):
                    if client.request("GET", client.url + "/", absolute=True).status == 200:
                        break
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"serve did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
            yield client
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
