"""A user's session with the real ``wsk`` CLI (apache/openwhisk-cli, built by the project's
installer) against ``owdedup serve``: set up from the banner's line, create, invoke with
``-r`` and ``-b``, read activations (list, get, logs, result, a bounded poll), fire a trigger
and switch its rule off and on."""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from owdedup.serve.server import DevServer, usage_lines
from tests.serve.conftest import AUTH, wait_for
from tests.tooling import real_wsk

HELLO = """
def main(params):
    print("hello log", params.get("name"))
    return {"greeting": "hi " + params.get("name", "nobody")}
"""


@dataclass
class Wsk:
    binary: Path
    home: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, timeout=120,
            env={"WSK_CONFIG_FILE": str(self.home / "wskprops"), "HOME": str(self.home),
                 "PATH": "/usr/bin:/bin"},
            check=False,
        )
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def json(self, *args: str) -> Any:
        """The JSON a command prints after its ``ok: ...`` line (or alone)."""
        out = self.run(*args).stdout
        start = min(i for i in (out.find("{"), out.find("[")) if i >= 0)
        return json.loads(out[start:])


@pytest.fixture
def wsk(server: DevServer, tmp_path: Path) -> Wsk:
    handle = Wsk(real_wsk(), tmp_path)
    banner = next(line for line in usage_lines(server.url, "guest", AUTH, generated=True)
                  if "wsk property set" in line)
    argv = shlex.split(banner.strip())
    assert argv[0] == "wsk"
    handle.run(*argv[1:])  # the banner's own line is what real wsk accepts
    (tmp_path / "hello.py").write_text(HELLO)
    return handle


def test_create_invoke_and_read_activations(wsk: Wsk) -> None:
    hello = str(wsk.home / "hello.py")
    assert "ok: created action hello" in wsk.run("action", "create", "hello", hello,
                                                 "--kind", "python:3.11").stdout
    assert wsk.json("action", "invoke", "hello", "-p", "name", "bob", "-r") == \
        {"greeting": "hi bob"}
    record = wsk.json("action", "invoke", "hello", "-p", "name", "ann", "-b")
    assert record["response"]["result"] == {"greeting": "hi ann"}
    activation_id = record["activationId"]

    listing = wsk.run("activation", "list").stdout.splitlines()
    assert listing[0].split()[:4] == ["Datetime", "Activation", "ID", "Kind"]
    rows = {line.split()[2]: line.split() for line in listing[1:]}
    assert rows[activation_id][4] == "warm" and rows[activation_id][-1] == "guest/hello:0.0.1"
    assert [row[4] for row in rows.values()].count("cold") == 1  # the first run only

    got = wsk.json("activation", "get", activation_id)
    assert got["activationId"] == activation_id and got["name"] == "hello"
    assert "hello log ann" in wsk.run("activation", "logs", activation_id).stdout
    assert wsk.json("activation", "result", activation_id) == {"greeting": "hi ann"}

    # A new version shows in the records (OpenWhisk writes the action's version there).
    wsk.run("action", "update", "hello", hello)
    wsk.run("action", "invoke", "hello", "-b")
    newest = wsk.run("activation", "list", "--limit", "1").stdout.splitlines()[1]
    assert newest.split()[-1] == "guest/hello:0.0.2"

    polled = wsk.run("activation", "poll", "hello", "--exit", "2", "--since-seconds", "300")
    assert f"Activation: 'hello' ({activation_id})" in polled.stdout
    assert "hello log ann" in polled.stdout


def test_invoke_failure_and_unknown_action(wsk: Wsk) -> None:
    (wsk.home / "boom.py").write_text("def main(p):\n    raise ValueError('boom')\n")
    wsk.run("action", "create", "boom", str(wsk.home / "boom.py"), "--kind", "python:3.11")
    failed = wsk.run("action", "invoke", "boom", "-r", check=False)
    assert failed.returncode != 0
    assert '"error": "boom"' in failed.stdout + failed.stderr
    missing = wsk.run("action", "invoke", "nope", "-r", check=False)
    assert missing.returncode != 0
    assert "The requested resource does not exist." in missing.stderr


def test_trigger_fire_and_rule_enable_disable(wsk: Wsk) -> None:
    wsk.run("action", "create", "hello", str(wsk.home / "hello.py"), "--kind", "python:3.11")
    wsk.run("trigger", "create", "uploaded")
    wsk.run("rule", "create", "on-upload", "uploaded", "hello")
    fired = wsk.run("trigger", "fire", "uploaded", "-p", "name", "tr").stdout
    assert "ok: triggered /_/uploaded with id " in fired
    trigger_id = fired.split()[-1]

    def rule_result() -> Any:
        done = wsk.run("activation", "logs", trigger_id, check=False)
        return done.returncode == 0 and '"success": true' in done.stdout and done.stdout

    line = json.loads(wait_for(rule_result, what="the trigger's activation").splitlines()[0])
    assert line["rule"] == "guest/on-upload" and line["action"] == "guest/hello"
    assert wsk.json("activation", "result", line["activationId"]) == {"greeting": "hi tr"}

    assert "ok: disabled rule on-upload" in wsk.run("rule", "disable", "on-upload").stdout
    assert wsk.json("rule", "get", "on-upload")["status"] == "inactive"
    assert "ok: enabled rule on-upload" in wsk.run("rule", "enable", "on-upload").stdout
    assert wsk.json("rule", "get", "on-upload")["status"] == "active"
