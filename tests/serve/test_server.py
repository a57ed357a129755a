"""``owdedup serve`` over HTTP: entity CRUD, invocations in separate processes, triggers,
activations and OpenWhisk's error answers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from owdedup.serve.server import DevServer
from tests.serve.conftest import AUTH, Client, ServerFactory, params, wait_for, zip_code

ECHO = """
import os

def main(params):
    print("echo got", sorted(params))
    env = {k: v for k, v in os.environ.items() if k.startswith("__OW_")}
    return {"params": params, "pid": os.getpid(), "env": env}
"""

SLEEPER = """
import os
import time

def main(params):
    print("pid", os.getpid())
    print("sleeping", params.get("sleep", 0))
    time.sleep(float(params.get("sleep", 0)))
    return {"slept": params.get("sleep", 0)}
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def result_of(reply: Any) -> Any:
    return reply.json["response"]["result"]


# -- the server's face ---------------------------------------------------------------------


def test_root_lists_runtimes_without_auth(client: Client, server: DevServer) -> None:
    reply = client.request("GET", server.url + "/", absolute=True, auth=None)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"  # wskdeploy compares it
    runtimes = reply.json["runtimes"]
    python = {r["kind"]: r for r in runtimes["python"]}
    assert set(python) == {"python:3.9", "python:3.10", "python:3.11", "python:3.12"}
    assert python["python:3.11"]["default"] is True
    assert [r["kind"] for r in runtimes["nodejs"]] == ["nodejs:20"]
    assert reply.json["limits"]["max_action_duration"] == 300_000
    info = Client(server.url, auth=None).request("GET", server.url + "/api/v1", absolute=True)
    assert info.status == 200 and info.json["api_paths"] == ["/api/v1"]


def test_auth_is_required_and_checked(server: DevServer) -> None:
    missing = Client(server.url, auth=None).request("GET", "actions")
    assert missing.status == 401
    assert set(missing.json) == {"error", "code"}
    wrong = Client(server.url, auth=AUTH[:-1] + "x").request("GET", "actions")
    assert wrong.status == 401 and "invalid" in wrong.json["error"]
    namespaces = Client(server.url).request("GET", server.url + "/api/v1/namespaces",
                                            absolute=True)
    assert namespaces.json == ["guest"]
    other = Client(server.url, namespace="someone").request("GET", "actions")
    assert other.status == 403


def test_unknown_entities_are_404(client: Client) -> None:
    assert client.request("GET", "actions/nope").status == 404
    assert client.request("GET", "packages/nope").status == 404
    assert client.invoke("nope").status == 404
    assert client.request("POST", "triggers/nope", {}).status == 404
    assert client.request("GET", "rules/nope").status == 404
    assert client.request("GET", "activations/" + "0123456789abcdef" * 2).status == 404
    assert client.request("GET", "widgets").status == 404
    reply = client.request("DELETE", "actions/nope")
    assert reply.status == 404 and reply.json["error"]


def test_malformed_json_is_400(client: Client) -> None:
    assert client.request("PUT", "packages/p", raw=b"{not json").status == 400
    client.action("echo", ECHO)
    assert client.request("POST", "actions/echo?blocking=true", raw=b"[1, 2]").status == 400
    bad = client.request("POST", "actions/echo?blocking=true", raw=b'{"a": ')
    assert bad.status == 400 and "malformed" in bad.json["error"]
    no_exec = client.put("actions/empty", {"parameters": []})
    assert no_exec.status == 400


def test_oversize_payload_is_413(client: Client) -> None:
    client.action("echo", ECHO)
    payload = {"blob": "x" * (1024 * 1024 + 10)}
    assert client.invoke("echo", payload).status == 413
    client.put("triggers/t", {})
    assert client.request("POST", "triggers/t", payload).status == 413


def test_put_without_overwrite_conflicts(client: Client) -> None:
    assert client.put("packages/p", {}).status == 200
    assert client.put("packages/p", {}).status == 409
    again = client.put("packages/p", {"parameters": params({"a": 1})}, overwrite=True)
    assert again.status == 200 and again.json["version"] == "0.0.2"
    body = {"exec": {"kind": "python:3.11", "code": ECHO}}
    assert client.put("actions/p/a", body).status == 200
    conflict = client.put("actions/p/a", body)
    assert conflict.status == 409 and conflict.json["error"]
    assert client.put("triggers/t", {}).status == 200
    assert client.put("triggers/t", {}).status == 409
    rule = {"trigger": "/_/t", "action": "/_/p/a"}
    assert client.put("rules/r", rule).status == 200
    assert client.put("rules/r", rule).status == 409
    assert client.put("rules/r", rule, overwrite=True).status == 200


# -- CRUD ----------------------------------------------------------------------------------


def test_package_crud_and_binding(client: Client) -> None:
    created = client.put("packages/owdedup", {
        "parameters": params({"store": "file:///s"}),
        "annotations": params({"description": "dedup"}), "publish": False,
    })
    assert created.status == 200
    assert created.json["namespace"] == "guest" and created.json["version"] == "0.0.1"
    assert created.json["binding"] == {}
    client.action("owdedup/hash", ECHO)
    got = client.request("GET", "packages/owdedup").json
    assert got["parameters"] == [{"key": "store", "value": "file:///s"}]
    assert [a["name"] for a in got["actions"]] == ["hash"]
    bound = client.put("packages/mine", {"binding": {"namespace": "_", "name": "owdedup"},
                                         "parameters": params({"store": "s3"})})
    assert bound.json["binding"] == {"namespace": "guest", "name": "owdedup"}
    listed = client.request("GET", "packages").json
    assert [p["name"] for p in listed] == ["mine", "owdedup"]
    assert client.request("DELETE", "packages/owdedup").status == 409  # not empty
    assert client.request("DELETE", "actions/owdedup/hash").status == 200
    assert client.request("DELETE", "packages/mine").status == 200
    assert client.request("DELETE", "packages/owdedup").status == 200
    assert client.request("GET", "packages/owdedup").status == 404


def test_action_crud_round_trip(client: Client) -> None:
    client.put("packages/p", {})
    put = client.put("actions/p/echo", {
        "exec": {"kind": "python:3.11", "code": ECHO, "main": "main"},
        "parameters": params({"a": 1}), "annotations": params({"provide-api-key": True}),
        "limits": {"timeout": 5000, "memory": 128, "logs": 5},
    })
    assert put.status == 200
    view = client.request("GET", "actions/p/echo").json
    assert view["namespace"] == "guest/p" and view["name"] == "echo"
    assert view["exec"] == {"kind": "python:3.11", "binary": False, "code": ECHO, "main": "main"}
    assert view["limits"] == {"timeout": 5000, "memory": 128, "logs": 5, "concurrency": 1}
    assert {"key": "exec", "value": "python:3.11"} in view["annotations"]
    assert {"key": "provide-api-key", "value": True} in view["annotations"]
    assert "code" not in client.request("GET", "actions/p/echo?code=false").json["exec"]
    zipped = zip_code({"__main__.py": ECHO})
    client.action("zipped", zipped, binary=True)
    assert client.request("GET", "actions/zipped").json["exec"]["code"] == zipped
    assert [a["name"] for a in client.request("GET", "actions").json] == ["echo", "zipped"]
    assert [a["name"] for a in client.request("GET", "actions/p/").json] == ["echo"]
    assert len(client.request("GET", "actions?limit=1&skip=1").json) == 1
    assert client.request("GET", "actions?count=true").json == {"actions": 2}
    updated = client.put("actions/p/echo", {"parameters": params({"a": 2})}, overwrite=True)
    assert updated.json["version"] == "0.0.2" and updated.json["exec"]["code"] == ECHO
    assert updated.json["limits"]["timeout"] == 5000  # kept: absent from the update
    bad_kind = client.put("actions/x", {"exec": {"kind": "cobol:1", "code": "x"}})
    assert bad_kind.status == 400
    bad_limit = client.put("actions/x", {"exec": {"kind": "python:3.11", "code": "x"},
                                         "limits": {"timeout": 10}})
    assert bad_limit.status == 400
    assert client.request("DELETE", "actions/p/echo").json["name"] == "echo"
    assert client.request("GET", "actions/p/echo").status == 404


def test_trigger_and_rule_crud(client: Client) -> None:
    client.action("echo", ECHO)
    trigger = client.put("triggers/uploaded", {
        "parameters": params({"source": "minio"}),
        "annotations": params({"feed": "/whisk.system/messaging/kafkaFeed"}),
    })
    assert trigger.status == 200 and trigger.json["parameters"][0]["key"] == "source"
    rule = client.put("rules/on-upload", {"trigger": "/guest/uploaded", "action": "/guest/echo"})
    assert rule.status == 200
    assert rule.json["status"] == "active"
    assert rule.json["trigger"] == {"name": "uploaded", "path": "guest"}
    assert rule.json["action"] == {"name": "echo", "path": "guest"}
    rules = client.request("GET", "triggers/uploaded").json["rules"]
    assert rules == {"guest/on-upload": {"action": {"name": "echo", "path": "guest"},
                                         "status": "active"}}
    off = client.request("POST", "rules/on-upload", {"status": "inactive"})
    # OpenWhisk answers a status change with an empty 200; the rule shows the new status.
    assert off.status == 200 and off.raw == b""
    assert client.request("GET", "rules/on-upload").json["status"] == "inactive"
    assert client.request("POST", "rules/on-upload", {"status": "sideways"}).status == 400
    assert [r["name"] for r in client.request("GET", "rules").json] == ["on-upload"]
    missing = client.put("rules/broken", {"trigger": "/_/nope", "action": "/_/echo"})
    assert missing.status == 404
    assert client.request("DELETE", "rules/on-upload").status == 200
    assert client.request("DELETE", "triggers/uploaded").status == 200
    assert client.request("GET", "triggers").json == []


# -- invocations ---------------------------------------------------------------------------


def test_plain_source_action_runs_in_a_warm_separate_process(client: Client,
                                                             server: DevServer) -> None:
    client.put("packages/p", {})
    client.action("p/echo", ECHO)
    first = client.invoke("p/echo", {"x": 1})
    assert first.status == 200, first.raw
    body = first.json
    result = body["response"]["result"]
    assert result["pid"] != os.getpid()
    env = result["env"]
    assert env["__OW_ACTIVATION_ID"] == body["activationId"] == \
        first.headers["x-openwhisk-activation-id"]
    assert env["__OW_ACTION_NAME"] == "/guest/p/echo"
    assert env["__OW_NAMESPACE"] == "guest"
    assert env["__OW_API_HOST"] == server.url
    assert env["__OW_ACTION_VERSION"] == "0.0.1"
    assert int(env["__OW_DEADLINE"]) > body["start"]
    assert "__OW_API_KEY" not in env
    assert any("echo got ['x']" in line for line in body["logs"])
    second = client.invoke("p/echo", {"x": 2})
    assert result_of(second)["pid"] == result["pid"]  # warm reuse
    assert result_of(second)["env"]["__OW_ACTIVATION_ID"] == second.json["activationId"]
    client.action("p/echo", ECHO, annotations=params({"provide-api-key": True}))
    keyed = result_of(client.invoke("p/echo"))
    assert keyed["env"]["__OW_API_KEY"] == AUTH
    assert keyed["env"]["__OW_ACTION_VERSION"] == "0.0.2"
    assert keyed["pid"] != result["pid"]  # a new version gets a new process


def test_zip_action_with_its_own_modules_and_main(client: Client) -> None:
    code = zip_code({
        "__main__.py": "import helper, os\n\ndef handler(params):\n"
                       "    return {'greeting': helper.greet(params['name']),\n"
                       "            'pid': os.getpid()}\n",
        "helper.py": "def greet(name):\n    return 'hello ' + name\n",
    })
    client.action("zipped", code, binary=True, main="handler")
    reply = client.invoke("zipped", {"name": "zip"})
    assert reply.status == 200, reply.raw
    assert result_of(reply)["greeting"] == "hello zip"
    assert result_of(reply)["pid"] != os.getpid()
    assert result_of(client.invoke("zipped", {"name": "b"}))["pid"] == result_of(reply)["pid"]


IMPORTS = """
def main(params):
    found = {}
    for name in params["modules"]:
        try:
            __import__(name)
            found[name] = True
        except ImportError:
            found[name] = False
    return found
"""


def test_actions_see_only_what_they_ship_plus_the_runtime_site(
        make_server: ServerFactory, tmp_path: Path) -> None:
    site = tmp_path / "runtime-site"
    site.mkdir()
    (site / "preinstalled.py").write_text("VALUE = 1\n")
    server = make_server(runtime_site=site)
    client = Client(server.url)
    client.action("imports", IMPORTS)
    found = result_of(client.invoke("imports", {"modules": ["yaml", "owdedup", "preinstalled",
                                                            "json"]}))
    assert found == {"yaml": False, "owdedup": False, "preinstalled": True, "json": True}


def test_virtualenv_in_the_zip_is_activated(client: Client) -> None:
    activate = ("import os, site\n"
                "base = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n"
                "site.addsitedir(os.path.join(base, 'lib', 'python3.11', 'site-packages'))\n")
    code = zip_code({
        "__main__.py": "import shipped\n\ndef main(params):\n    return {'v': shipped.V}\n",
        "virtualenv/bin/activate_this.py": activate,
        "virtualenv/lib/python3.11/site-packages/shipped.py": "V = 'from the venv'\n",
    })
    client.action("venv", code, binary=True)
    reply = client.invoke("venv")
    assert reply.status == 200, reply.raw
    assert result_of(reply) == {"v": "from the venv"}


def test_parameter_merge_package_action_payload(client: Client) -> None:
    client.put("packages/p", {"parameters": params({"a": "package", "b": "package",
                                                    "c": "package"})})
    client.action("p/echo", ECHO, parameters=params({"b": "action", "c": "action"}))
    merged = result_of(client.invoke("p/echo", {"c": "payload"}))["params"]
    assert merged == {"a": "package", "b": "action", "c": "payload"}
    client.put("packages/bound", {"binding": {"name": "p"},
                                  "parameters": params({"a": "binding"})})
    through = result_of(client.invoke("bound/echo", {}))["params"]
    assert through == {"a": "binding", "b": "action", "c": "action"}


def test_sequence_of_two_actions(client: Client) -> None:
    client.put("packages/p", {"parameters": params({"step": 10})})
    client.action("p/inc", "def main(p):\n    return {'n': p['n'] + 1}\n")
    client.action("p/times", "def main(p):\n    print('times', p)\n"
                             "    return {'n': p['n'] * p['step'], 'seen': sorted(p)}\n")
    sequence = client.put("actions/p/both", {"exec": {
        "kind": "sequence", "components": ["/guest/p/inc", "/_/p/times"]}})
    assert sequence.status == 200
    assert sequence.json["exec"]["components"] == ["/guest/p/inc", "/guest/p/times"]
    reply = client.invoke("p/both", {"n": 1, "only_first": True})
    assert reply.status == 200, reply.raw
    body = reply.json
    assert body["response"]["result"] == {"n": 20, "seen": ["n", "step"]}
    assert len(body["logs"]) == 2  # a sequence's logs are its components' activation ids
    step = client.activation(body["logs"][1]).json
    assert step["name"] == "times" and any("times" in line for line in step["logs"])
    assert client.invoke("p/both", {"n": 1}, result=True).json == {"n": 20,
                                                                  "seen": ["n", "step"]}
    missing = client.put("actions/p/bad", {"exec": {"kind": "sequence",
                                                    "components": ["/_/p/nope"]}})
    assert missing.status == 400


def test_application_error_is_502_with_the_error_result(client: Client) -> None:
    client.action("fails", "def main(p):\n    return {'error': 'nope', 'why': p.get('why')}\n")
    reply = client.invoke("fails", {"why": "test"})
    assert reply.status == 502
    assert reply.json["response"]["status"] == "application error"
    assert reply.json["response"]["result"] == {"error": "nope", "why": "test"}
    only = client.invoke("fails", result=True)
    assert only.status == 502 and only.json == {"error": "nope", "why": None}
    client.action("first", "def main(p):\n    return {'error': 'stop here'}\n")
    client.action("never", "def main(p):\n    raise SystemExit('must not run')\n")
    client.put("actions/seq", {"exec": {"kind": "sequence",
                                        "components": ["/_/first", "/_/never"]}})
    stopped = client.invoke("seq")
    assert stopped.status == 502 and result_of(stopped) == {"error": "stop here"}
    assert len(stopped.json["logs"]) == 1


def test_uncaught_exception_gives_error_and_traceback(client: Client) -> None:
    client.action("boom", "def main(p):\n    print('before')\n    raise ValueError('boom')\n")
    reply = client.invoke("boom")
    assert reply.status == 502
    assert result_of(reply) == {"error": "boom"}
    assert reply.json["response"]["status"] == "application error"
    logs = "\n".join(reply.json["logs"])
    assert "stdout: before" in logs
    assert "stderr: Traceback" in logs and "ValueError: boom" in logs
    # An array is a result (the python:3.11 runtime accepts it); a bare number or a string
    # is not.
    client.action("listy", "def main(p):\n    return 42\n")
    assert client.invoke("listy").status == 502
    client.action("stringy", "def main(p):\n    return 'x'\n")
    stringy = client.invoke("stringy")
    assert stringy.status == 502
    assert result_of(stringy) == {"error": "The action did not return a dictionary or array."}
    client.action("broken", "def main(p)\n    return {}\n")  # a syntax error
    broken = client.invoke("broken")
    assert broken.status == 502 and "Cannot start action" in result_of(broken)["error"]
    assert "SyntaxError" in "\n".join(broken.json["logs"])


def test_timeout_kills_the_process_and_the_next_invoke_works(client: Client) -> None:
    client.action("sleeper", SLEEPER, limits={"timeout": 1000})
    reply = client.invoke("sleeper", {"sleep": 5})
    assert reply.status == 502
    assert reply.json["response"]["status"] == "action developer error"
    assert result_of(reply) == {
        "error": "The action exceeded its time limits of 1000 milliseconds."}
    assert any("sleeping 5" in line for line in reply.json["logs"])
    pid = next(int(line.rsplit(" ", 1)[1]) for line in reply.json["logs"]
               if "stdout: pid " in line)
    wait_for(lambda: not _alive(pid), timeout=10, what=f"process {pid} to be killed")
    after = client.invoke("sleeper", {"sleep": 0})
    assert after.status == 200 and result_of(after) == {"slept": 0}


HOG = """\
def main(params):
    hog = b"x" * (params["mb"] << 20)  # written, so resident
    return {"held_mb": len(hog) >> 20}
"""


def test_memory_limit_kills_the_process_and_the_next_invoke_works(client: Client) -> None:
    client.action("hog", HOG, limits={"memory": 128})
    within = client.invoke("hog", {"mb": 16})
    assert within.status == 200 and result_of(within) == {"held_mb": 16}
    over = client.invoke("hog", {"mb": 200})
    assert over.status == 502
    assert over.json["response"]["status"] == "action developer error"
    assert result_of(over) == {"error": "The action exhausted its memory and was aborted."}
    after = client.invoke("hog", {"mb": 16})  # a new process: the old one was killed
    assert after.status == 200 and result_of(after) == {"held_mb": 16}
    client.action("hog", HOG, limits={"memory": 512})
    assert result_of(client.invoke("hog", {"mb": 200})) == {"held_mb": 200}


def test_result_over_one_megabyte_is_an_error(client: Client) -> None:
    client.action("big", "def main(p):\n    return {'x': 'y' * (1024 * 1024 + 1)}\n")
    reply = client.invoke("big")
    assert reply.status == 502
    assert "exceeded the allowed length" in result_of(reply)["error"]


def test_non_blocking_invoke_then_activation_result_and_logs(client: Client) -> None:
    client.put("packages/p", {})
    client.action("p/echo", ECHO)
    reply = client.invoke("p/echo", {"k": "v"}, blocking=False)
    assert reply.status == 202
    activation_id = reply.json["activationId"]
    assert set(reply.json) == {"activationId"}
    record = client.activation(activation_id)
    assert record.status == 200 and record.json["activationId"] == activation_id
    assert record.json["namespace"] == "guest" and record.json["name"] == "echo"
    result = client.activation(activation_id, "/result").json
    assert result["success"] is True and result["result"]["params"] == {"k": "v"}
    logs = client.activation(activation_id, "/logs").json["logs"]
    assert any("echo got ['k']" in line for line in logs)
    listed = client.request("GET", "activations?name=p/echo&limit=5").json
    assert [a["activationId"] for a in listed] == [activation_id]
    assert "logs" not in listed[0] and listed[0]["statusCode"] == 0
    docs = client.request("GET", "activations?docs=true").json
    assert docs[0]["response"]["result"]["params"] == {"k": "v"}
    since = client.request("GET", f"activations?since={record.json['end'] + 1}").json
    assert since == []


def test_blocking_invoke_past_the_wait_answers_202(make_server: ServerFactory) -> None:
    client = Client(make_server(blocking_wait_s=0.5).url)
    client.action("sleeper", SLEEPER)
    reply = client.invoke("sleeper", {"sleep": 2})
    assert reply.status == 202
    activation_id = reply.json["activationId"]
    assert client.activation(activation_id, "/result").json["result"] == {"slept": 2}


# -- triggers and rules --------------------------------------------------------------------


def activations_of(client: Client, name: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = client.request(
        "GET", f"activations?name={name}&docs=true").json
    return listed


def test_fire_with_an_active_rule_runs_its_action(client: Client) -> None:
    client.action("echo", ECHO)
    client.put("triggers/uploaded", {"parameters": params({"from": "trigger", "x": 0})})
    client.put("rules/on-upload", {"trigger": "/_/uploaded", "action": "/_/echo"})
    fired = client.request("POST", "triggers/uploaded", {"x": 1})
    assert fired.status == 202
    trigger_id = fired.json["activationId"]
    runs = wait_for(lambda: activations_of(client, "echo"), what="the rule's action")
    assert runs[0]["response"]["result"]["params"] == {"from": "trigger", "x": 1}
    trigger = wait_for(lambda: client.activation(trigger_id).json.get("logs"),
                       what="the trigger's record")
    assert json.loads(trigger[0])["activationId"] == runs[0]["activationId"]
    assert json.loads(trigger[0])["rule"] == "guest/on-upload"


def test_a_rule_whose_action_was_deleted_does_not_stop_the_others(client: Client) -> None:
    client.action("echo", ECHO)
    client.action("doomed", ECHO)
    client.put("triggers/t", {})
    client.put("rules/a-doomed", {"trigger": "/_/t", "action": "/_/doomed"})
    client.put("rules/b-echo", {"trigger": "/_/t", "action": "/_/echo"})
    assert client.request("DELETE", "actions/doomed").status == 200
    fired = client.request("POST", "triggers/t", {"x": 1})
    assert fired.status == 202
    runs = wait_for(lambda: activations_of(client, "echo"), what="the other rule's action")
    assert runs[0]["response"]["result"]["params"] == {"x": 1}
    logs = wait_for(lambda: client.activation(fired.json["activationId"]).json.get("logs"),
                    what="the trigger's record")
    failed, ran = (json.loads(line) for line in logs)
    assert failed["success"] is False and failed["statusCode"] == 1
    assert failed["rule"] == "guest/a-doomed" and "doomed" in failed["error"]
    assert "known" not in failed["error"] and "echo" not in failed["error"]
    assert ran["success"] is True and ran["activationId"] == runs[0]["activationId"]


def test_fire_without_an_active_rule_is_204(client: Client) -> None:
    client.action("echo", ECHO)
    client.put("triggers/t", {})
    assert client.request("POST", "triggers/t", {"x": 1}).status == 204
    client.put("rules/r", {"trigger": "/_/t", "action": "/_/echo"})
    client.request("POST", "rules/r", {"status": "inactive"})
    quiet = client.request("POST", "triggers/t", {"x": 2})
    assert quiet.status == 204 and quiet.raw == b""
    time.sleep(0.3)
    assert activations_of(client, "echo") == []
    client.request("POST", "rules/r", {"status": "active"})
    assert client.request("POST", "triggers/t", {"x": 3}).status == 202
    wait_for(lambda: activations_of(client, "echo"), what="the action after re-activation")


# -- persistence ---------------------------------------------------------------------------


def test_state_directory_survives_a_restart(make_server: ServerFactory, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = make_server(state_dir=state)
    client = Client(first.url)
    client.put("packages/p", {"parameters": params({"a": 1})})
    client.action("p/echo", ECHO)
    client.put("triggers/t", {})
    client.put("rules/r", {"trigger": "/_/t", "action": "/_/p/echo"})
    first.close()
    second = Client(make_server(state_dir=state).url)
    assert second.request("GET", "rules/r").json["status"] == "active"
    assert result_of(second.invoke("p/echo", {"b": 2}))["params"] == {"a": 1, "b": 2}
