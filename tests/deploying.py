"""What the tests that run the real ``deploy.sh`` share: a copy of the project to deploy
from, ``deploy.sh`` itself (checked never to print a credential), ``owdedup serve`` as a
separate process, the way a developer runs it, what a server holds, and where the deployed
thumbnail function puts its output for given bytes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from owdedup.deploy import plan
from owdedup.runtime.functions import get_function
from tests.serve.conftest import Client
from tests.service_fixtures import PROJECT
from tests.tooling import listen_ports

#: deploy.sh's inputs that hold credentials: none may appear in its output.
SECRET_VARIABLES = (*plan.SECRET_VARIABLES, plan.ENV_AUTH)
#: The kinds of entity a deployment creates, as the REST API names its collections.
COLLECTIONS = ("packages", "actions", "triggers", "rules")


def copy_project(root: Path) -> Path:
    """What deploy.sh needs of the project, copied into ``root`` (deploy.sh builds into the
    folder it runs from: the checkout stays clean)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("deploy.sh", "manifest.yaml"):
        shutil.copy2(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "actions", root / "actions",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def run_deploy_sh(project: Path, env: dict[str, str], *args: str, timeout: float = 1800
                  ) -> subprocess.CompletedProcess[str]:
    """Run ``project``'s deploy.sh with exactly ``env``; assert that no credential in it shows
    in the output."""
    done = subprocess.run(["bash", str(project / "deploy.sh"), *args], cwd=project, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout, check=False)
    output = done.stdout + done.stderr
    for name in SECRET_VARIABLES:
        if env.get(name):
            assert env[name] not in output, f"{name}'s value in deploy.sh's output"
    return done


def entities(client: Client) -> dict[str, set[str]]:
    """Every package, action, trigger and rule the server holds, as ``[package/]name``."""
    found = {}
    for collection in COLLECTIONS:
        reply = client.request("GET", f"{collection}?limit=200")
        assert reply.status == 200, reply.raw
        found[collection] = {f"{e['namespace'].partition('/')[2]}/{e['name']}".lstrip("/")
                             for e in reply.json}
    return found


def thumbnail_outputs(data: bytes, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(function identity, output key) of each thumbnail the deployed function makes of
    ``data`` with ``params`` (as bound or passed: ``{"sizes": "64"}``; unset: the defaults)."""
    spec = get_function("thumbnail")
    digest = hashlib.sha256(data).hexdigest()
    return [(variant.function_id, variant.output_key(spec.name, digest))
            for variant in spec.variants(spec.normalise(params))]


def thumbnail_output(data: bytes, params: Mapping[str, Any]) -> tuple[str, str]:
    """:func:`thumbnail_outputs` where ``params`` make exactly one thumbnail."""
    (only,) = thumbnail_outputs(data, params)
    return only


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
