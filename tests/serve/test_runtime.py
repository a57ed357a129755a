"""Actions under ``owdedup serve`` run as the python:3.11 image runs them (actionloop proxy +
launcher): environment, time limits, the proxy's words, log markers and limits, the kill of
a whole process tree; other kinds: nodejs:20 on the machine's Node.js, blackbox refused at
invoke only."""

from __future__ import annotations

import json
import os
import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.serve.conftest import Client, ServerFactory, wait_for, zip_code
from tests.tooling import need_command

PROXY_KEYS = {"__OW_API_HOST", "__OW_NAMESPACE", "__OW_ACTION_NAME", "__OW_ACTION_VERSION",
              "__OW_ACTIVATION_ID", "__OW_TRANSACTION_ID", "__OW_DEADLINE",
              "__OW_EXECUTION_ENV", "__OW_PROXY_VERSION", "__OW_WAIT_FOR_ACK"}
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z (stdout|stderr): (.*)$")


def result_of(reply: Any) -> Any:
    return reply.json["response"]["result"]


def _dead(pid: int) -> bool:
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


# -- environment and time limits --------------------------------------------------------------

ENV_AT_IMPORT = """
import os
AT_IMPORT = dict(os.environ)

def main(params):
    return {"import": AT_IMPORT, "run": dict(os.environ)}
"""


def test_the_action_sees_only_the_proxys_variables_already_at_import(client: Client) -> None:
    client.action("env", ENV_AT_IMPORT)
    first = client.invoke("env")
    assert first.status == 200, first.raw
    seen = result_of(first)
    assert set(seen["import"]) == PROXY_KEYS | {"PYTHONIOENCODING"}
    assert set(seen["run"]) == PROXY_KEYS | {"PYTHONIOENCODING"}  # no PATH, HOME, LANG
    assert seen["import"]["__OW_ACTIVATION_ID"] == first.json["activationId"]
    assert seen["import"]["__OW_EXECUTION_ENV"] == "openwhisk/action-python-v3.11"
    assert seen["import"]["__OW_PROXY_VERSION"] and seen["import"]["PYTHONIOENCODING"] == "UTF-8"
    assert re.fullmatch(r"[A-Za-z0-9]{32}", seen["run"]["__OW_TRANSACTION_ID"])
    second = result_of(client.invoke("env"))  # warm: the run request sets its own values
    assert second["import"] == seen["import"]
    assert second["run"]["__OW_ACTIVATION_ID"] != seen["run"]["__OW_ACTIVATION_ID"]
    assert second["run"]["__OW_TRANSACTION_ID"] != seen["run"]["__OW_TRANSACTION_ID"]


SLOW_BOTH = """
import time
time.sleep(2.5)

def main(params):
    time.sleep(2.5)
    return {"ok": True}
"""


def test_init_and_run_each_get_the_full_time_limit(client: Client) -> None:
    client.action("slow", SLOW_BOTH, limits={"timeout": 4000})  # 5 s in all
    reply = client.invoke("slow")
    assert reply.status == 200, reply.raw
    assert result_of(reply) == {"ok": True}


# -- the proxy's words ------------------------------------------------------------------------


def test_code_without_main_py_is_a_compile_failure(client: Client) -> None:
    client.action("nomain", zip_code({"helper.py": "X = 1\n"}), binary=True)
    reply = client.invoke("nomain")
    assert reply.status == 502
    assert reply.json["response"]["status"] == "action developer error"
    assert result_of(reply) == {
        "error": "The action failed to generate or locate a binary. See logs for details."}
    assert any("does not include __main__.py" in line for line in reply.json["logs"])


@pytest.mark.parametrize(("code", "main", "seen"), [
    ("import no_such_module_anywhere\n\ndef main(p):\n    return {}\n", None,
     "No module named 'no_such_module_anywhere'"),
    ("def main(p):\n    return {}\n", "handler", "cannot import name 'handler'"),
])
def test_an_import_error_or_missing_main_cannot_start(
        client: Client, code: str, main: str | None, seen: str) -> None:
    client.action("broken", code, main=main)
    reply = client.invoke("broken")
    assert reply.status == 502
    assert reply.json["response"]["status"] == "action developer error"
    assert result_of(reply) == {"error": "Cannot start action. Check logs for details."}
    assert any(seen in line for line in reply.json["logs"]), reply.json["logs"]


def test_an_exit_is_the_proxys_exited_unexpectedly(client: Client) -> None:
    client.action("quits", "import os\n\ndef main(p):\n    print('bye')\n    os._exit(3)\n")
    reply = client.invoke("quits")
    assert reply.status == 502
    assert result_of(reply) == {
        "error": "The action did not produce a valid response and exited unexpectedly."}
    assert any("stdout: bye" in line for line in reply.json["logs"])


def test_a_result_over_one_megabyte_is_an_application_error_with_its_start(
        client: Client) -> None:
    client.action("big", "def main(p):\n    return {'x': 'y' * (1024 * 1024 + 1)}\n")
    reply = client.invoke("big")
    assert reply.status == 502
    assert reply.json["response"]["status"] == "application error"
    error = result_of(reply)["error"]
    size = len(json.dumps({"x": "y" * (1024 * 1024 + 1)}))
    assert error.startswith("The action produced a response that exceeded the allowed length: "
                            f"{size} > 1048576 bytes. The truncated response was: "
                            '{"x": "yyyy')
    assert len(error) < 1048576 + 200


def test_an_array_is_a_result(client: Client) -> None:
    client.action("listy", "def main(p):\n    return [1, {'a': p.get('a')}]\n")
    reply = client.invoke("listy", {"a": 2})
    assert reply.status == 200, reply.raw
    assert reply.json["response"]["status"] == "success"
    assert result_of(reply) == [1, {"a": 2}]
    assert client.invoke("listy", {"a": 3}, result=True).json == [1, {"a": 3}]


# -- logs -------------------------------------------------------------------------------------

ORDERED = """
import os, sys, time

def main(p):
    print("one")
    time.sleep(0.05)
    print("two", file=sys.stderr)
    time.sleep(0.05)
    sys.stdout.write("three, no newline")
    if p.get("close"):
        os.close(1)  # the proxy, not the action, ends its logs
    return {"ok": True}
"""


def test_logs_in_order_ended_by_the_proxys_markers(client: Client) -> None:
    client.action("ordered", ORDERED)
    for close in (False, True):
        reply = client.invoke("ordered", {"close": close})
        assert reply.status == 200, reply.raw
        parsed = [LOG_LINE.match(line) for line in reply.json["logs"]]
        assert all(parsed), reply.json["logs"]
        assert [(m[1], m[2]) for m in parsed if m] == [
            ("stdout", "one"), ("stderr", "two"), ("stdout", "three, no newline")]


def test_logs_beyond_the_limit_are_cut_with_openwhisks_note(client: Client) -> None:
    client.action("chatty", "def main(p):\n    for i in range(3000):\n"
                            "        print(f'{i:04d} ' + 'x' * 1019)\n    return {}\n",
                  limits={"logs": 1})
    logs = client.invoke("chatty").json["logs"]
    *kept, note = logs
    assert LOG_LINE.match(note) and note.endswith(
        "stderr: Logs were truncated because the total bytes size exceeds the limit of "
        "1048576 bytes.")
    texts = [match[2] for match in map(LOG_LINE.match, kept) if match]
    assert len(texts) == len(kept) and sum(len(text) + 1 for text in texts) <= 1048576
    assert kept[0].endswith("stdout: 0000 " + "x" * 1019)
    assert len(kept) == 1048576 // 1025  # whole lines of 1024 bytes and a newline


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_one_endless_output_line_does_not_grow_the_server(client: Client) -> None:
    """200 MiB on stdout without a newline: read in bounded chunks, cut at the log limit
    (the server runs in this process: its peak resident size is this process's)."""
    client.action("flood", "import sys\n\ndef main(p):\n    chunk = 'z' * (1 << 20)\n"
                           "    for _ in range(200):\n        sys.stdout.write(chunk)\n"
                           "    return {'done': True}\n", limits={"logs": 1})
    baseline = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak resident size := current
    reply = client.invoke("flood")
    grown_mib = (_status_kib("VmHWM") - baseline) / 1024
    assert reply.status == 200 and result_of(reply) == {"done": True}
    logs = reply.json["logs"]
    assert logs[-1].endswith("exceeds the limit of 1048576 bytes.")
    assert grown_mib < 64, f"the server grew by {grown_mib:.0f} MiB"


# -- the process tree -------------------------------------------------------------------------

ESCAPER = """
import os, subprocess, sys, time

def main(p):
    # a child in a session of its own, and a daemon (double fork, its parent gone)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    print("child", child.pid, flush=True)
    daemon = subprocess.run([sys.executable, "-c",
        "import os, subprocess, sys\\n"
        "os.setsid()\\n"
        "d = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\\n"
        "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\\n"
        "print(d.pid)"], capture_output=True, text=True).stdout.strip()
    print("daemon", daemon, flush=True)
    time.sleep(30)
    return {}
"""


def test_a_timeout_kills_children_in_other_sessions_and_daemons(client: Client) -> None:
    client.action("escaper", ESCAPER, limits={"timeout": 6000})
    reply = client.invoke("escaper")
    assert result_of(reply) == {
        "error": "The action exceeded its time limits of 6000 milliseconds."}
    pids = {line.split()[-2]: int(line.split()[-1]) for line in reply.json["logs"]
            if re.search(r"stdout: (child|daemon) \d+$", line)}
    assert set(pids) == {"child", "daemon"}, reply.json["logs"]
    for name, pid in pids.items():
        wait_for(partial(_dead, pid), timeout=10, what=f"the {name} {pid} to die")


# -- other kinds ------------------------------------------------------------------------------

NODE_SOURCE = """
function main(params) {
  console.log('hello from node', params.name);
  return new Promise((resolve) => setTimeout(() => resolve({
    greeting: 'hello ' + params.name,
    activation: process.env.__OW_ACTIVATION_ID,
  }), 10));
}
"""


def test_nodejs_actions_run_on_the_machines_node(client: Client) -> None:
    need_command("node")
    client.action("hello", NODE_SOURCE, kind="nodejs:20")
    reply = client.invoke("hello", {"name": "node"})
    assert reply.status == 200, reply.raw
    assert result_of(reply) == {"greeting": "hello node",
                                "activation": reply.json["activationId"]}
    assert any("stdout: hello from node node" in line for line in reply.json["logs"])
    module = zip_code({
        "package.json": json.dumps({"name": "m", "main": "lib/entry.js"}),
        "lib/entry.js": "exports.handler = async (p) => ({sum: p.a + p.b});\n",
    })
    client.action("zipped", module, kind="nodejs:default", binary=True, main="handler")
    assert result_of(client.invoke("zipped", {"a": 1, "b": 2})) == {"sum": 3}
    client.action("throws", "function main() { throw new Error('node says no'); }\n",
                  kind="nodejs:20")
    thrown = client.invoke("throws")
    assert thrown.status == 502 and result_of(thrown) == {"error": "node says no"}
    assert thrown.json["response"]["status"] == "application error"


def test_blackbox_is_accepted_but_not_run_here(client: Client) -> None:
    created = client.put("actions/docker", {"exec": {"kind": "blackbox",
                                                     "image": "openwhisk/dockerskeleton"}})
    assert created.status == 200, created.raw
    assert created.json["exec"]["image"] == "openwhisk/dockerskeleton"
    assert client.request("GET", "actions/docker").json["exec"]["kind"] == "blackbox"
    reply = client.invoke("docker")
    assert reply.status == 502
    assert reply.json["response"]["status"] == "action developer error"
    error = result_of(reply)["error"]
    assert "owdedup serve cannot run actions of kind 'blackbox'" in error
    assert client.put("actions/noimage", {"exec": {"kind": "blackbox"}}).status == 400


def test_a_python_kind_without_an_interpreter_is_refused_at_invoke(
        make_server: ServerFactory) -> None:
    server = make_server()
    server.process_runner.interpreters.pop("python:3.9")
    client = Client(server.url)
    client.action("old", "def main(p):\n    return {}\n", kind="python:3.9")
    assert "cannot run actions of kind 'python:3.9'" in result_of(client.invoke("old"))["error"]
