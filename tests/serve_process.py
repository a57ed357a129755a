"""``owdedup serve`` as a separate process, the way a developer runs it: for the tests that
deploy onto it with the real ``deploy.sh`` and wskdeploy."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.serve.conftest import Client
from tests.tooling import listen_ports


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
