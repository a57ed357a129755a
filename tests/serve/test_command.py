"""The ``serve`` command: its help, its key handling, and a real start and stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import typer
from typer.testing import CliRunner

from owdedup.deploy.runtime import RUNTIME_PACKAGES
from owdedup.serve.server import generate_auth, serve_command
from tests.serve.conftest import Client

APP = "import typer; from owdedup.serve.server import serve_command as s; " \
      "a = typer.Typer(); a.command()(s); a()"


def app() -> typer.Typer:
    application = typer.Typer()
    application.command("serve")(serve_command)
    return application


def test_help_says_it_is_a_development_server() -> None:
    result = CliRunner().invoke(app(), ["--help"])
    assert result.exit_code == 0
    assert "Development server" in result.output and "--auth" in result.output
    assert "127.0.0.1" in result.output


def test_a_bad_key_is_refused() -> None:
    result = CliRunner().invoke(app(), ["--auth", "nocolon", "--port", "0"])
    assert result.exit_code == 2


def test_generated_keys_look_like_openwhisk_keys() -> None:
    user, _, key = generate_auth().partition(":")
    assert len(user) == 36 and re.fullmatch(r"[A-Za-z0-9]{64}", key)


def test_serve_prints_how_to_connect_and_stops_on_sigterm(runtime_site: Path) -> None:
    # runtime_site: the runtime's packages are prepared (once) before, so the first line is
    # the banner, not the note that they are being installed
    proc = subprocess.Popen([sys.executable, "-c", APP, "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(3)]
        url = re.search(r"(http://127\.0\.0\.1:\d+)", lines[0])
        assert url, lines
        assert "generated key:" in lines[1]
        assert lines[2].strip().startswith("wsk property set --apihost")
        with urllib.request.urlopen(url.group(1) + "/", timeout=10) as reply:
            assert "python:3.11" in json.dumps(json.loads(reply.read())["runtimes"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


IMPORTS_THE_IMAGE_HAS = """
import certifi, dateutil, requests

def main(params):
    return {"requests": requests.__version__, "dateutil": dateutil.__version__,
            "from": requests.__file__, "certifi": certifi.where()}
"""


def test_serve_without_runtime_site_gives_actions_the_images_packages(
        runtime_site: Path) -> None:
    """Without ``--runtime-site`` the command prepares (here: finds, the fixture prepared it
    once) the python:3.11 image's packages at the image's versions."""
    auth = generate_auth()
    proc = subprocess.Popen([sys.executable, "-c", APP, "--port", "0"],
                            env={**os.environ, "OWDEDUP_SERVE_AUTH": auth},
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = re.search(r"(http://127\.0\.0\.1:\d+)", proc.stderr.readline())
        assert url, "no banner"
        client = Client(url.group(1), auth=auth)
        client.action("image", IMPORTS_THE_IMAGE_HAS)
        reply = client.invoke("image")
        assert reply.status == 200, reply.raw
        found = reply.json["response"]["result"]
        assert (found["requests"], found["dateutil"]) == (
            RUNTIME_PACKAGES["requests"], RUNTIME_PACKAGES["python-dateutil"]) == (
            "2.32.2", "2.8.2")
        assert Path(found["from"]).is_relative_to(runtime_site)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
