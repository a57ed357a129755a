"""The fan-out client against ``owdedup serve``: every task ends once, with a precise status."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from owdedup.openwhisk.client import Credentials, OpenWhiskClient
from owdedup.openwhisk.fanout import FAILED, INTERRUPTED, SUCCEEDED, FanOut, FanOutPolicy, Task
from owdedup.runtime.errors import ConfigError
from owdedup.serve.server import DevServer
from tests.serve.conftest import AUTH, Client, ServerFactory

DOUBLE = """
def main(params):
    n = params["n"]
    if n < 0:
        return {"error": f"n={n}: negative input"}
    return {"twice": 2 * n}
"""

FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, poll_initial_s=0.01, poll_max_s=0.05)


def fanout(server: DevServer, auth: str = AUTH, **policy: object) -> FanOut:
    client = OpenWhiskClient(Credentials(server.url, auth))
    return FanOut(client, FanOutPolicy(**{**FAST, **policy}))  # type: ignore[arg-type]


def tasks(action: str, values: list[int]) -> list[Task]:
    return [Task(f"k{i}", action, {"n": n}) for i, n in enumerate(values)]


def test_every_task_succeeds_once(server: DevServer, client: Client) -> None:
    client.action("double", DOUBLE)
    seen: list[str] = []
    outcomes, stats = fanout(server, window=4).run(tasks("double", list(range(12))),
                                                   on_outcome=lambda o: seen.append(o.key))
    assert [o.status for o in outcomes] == [SUCCEEDED] * 12
    assert [o.result for o in outcomes] == [{"twice": 2 * n} for n in range(12)]
    assert sorted(seen) == sorted(f"k{i}" for i in range(12))  # each reported exactly once
    assert stats.invocations == 12 and stats.retries == 0 and stats.throttled == 0
    assert all(o.activation_id and o.attempts == 1 for o in outcomes)
    assert stats.cold_starts >= 1 and stats.platform_ms > 0


def test_an_application_error_is_final(server: DevServer, client: Client) -> None:
    client.action("double", DOUBLE)
    outcomes, stats = fanout(server, window=2).run(tasks("double", [1, -2, 3]))
    assert [o.status for o in outcomes] == [SUCCEEDED, FAILED, SUCCEEDED]
    assert outcomes[1].error == "n=-2: negative input" and outcomes[1].attempts == 1
    assert stats.invocations == 3 and stats.retries == 0


def test_an_unknown_action_fails_each_task_without_retrying(server: DevServer) -> None:
    outcomes, stats = fanout(server).run(tasks("nope", [1, 2]))
    assert all(o.status == FAILED and "no action nope" in (o.error or "") for o in outcomes)
    assert stats.invocations == 0 and stats.retries == 0


def test_a_refused_key_stops_the_run(server: DevServer, client: Client) -> None:
    client.action("double", DOUBLE)
    wrong = AUTH.split(":")[0] + ":" + "x" * 64
    outcomes, stats = fanout(server, auth=wrong, window=1).run(tasks("double", [1, 2, 3]))
    assert all(o.status == FAILED and "refused the key" in (o.error or "") for o in outcomes)
    assert stats.invocations == 0
    assert wrong.split(":")[1] not in repr(outcomes)


def test_a_timed_out_activation_is_retried_then_reported(server: DevServer,
                                                         client: Client) -> None:
    client.action("sleepy", "import time\ndef main(p):\n    time.sleep(5)\n    return {}\n",
                  limits={"timeout": 300})
    outcomes, stats = fanout(server, max_attempts=2).run(tasks("sleepy", [1]))
    (outcome,) = outcomes
    assert outcome.status == FAILED and outcome.attempts == 2
    error = outcome.error or ""
    assert "developer error" in error and "after 2 attempts" in error
    assert stats.retries == 1 and stats.invocations == 2


def test_a_202_falls_back_to_polling(make_server: ServerFactory) -> None:
    server = make_server(blocking_wait_s=0.1)
    Client(server.url).action("slow", "import time\ndef main(p):\n    time.sleep(0.6)\n"
                                      "    return {'done': p['n']}\n")
    outcomes, stats = fanout(server, window=3).run(tasks("slow", [1, 2, 3]))
    assert [o.result for o in outcomes] == [{"done": 1}, {"done": 2}, {"done": 3}]
    assert stats.invocations == 3 and stats.lost == 0


def test_a_straggler_gets_a_backup_and_the_first_result_wins(server: DevServer, client: Client,
                                                             tmp_path: Path) -> None:
    marker = tmp_path / "first-call"
    client.action("lagger", f"""
import os, time
def main(p):
    if p["n"] == 0:
        try:
            os.close(os.open({str(marker)!r}, os.O_CREAT | os.O_EXCL))
            time.sleep(8)  # the first call of n=0 to arrive is slow, and says so
            return {{"n": 0, "slept": True}}
        except FileExistsError:
            pass
    return {{"n": p["n"], "slept": False}}
""")
    outcomes, stats = fanout(server, window=4, straggler_after=0.5, straggler_factor=3,
                             straggler_min_s=1.0).run(tasks("lagger", list(range(8))))
    assert [o.status for o in outcomes] == [SUCCEEDED] * 8
    # Without a backup the only call of n=0 sleeps; with one, the call that did not wins.
    assert outcomes[0].result == {"n": 0, "slept": False} and stats.backups >= 1


def test_stop_leaves_the_rest_for_a_rerun(server: DevServer, client: Client) -> None:
    client.action("double", DOUBLE)
    stop = threading.Event()
    outcomes, _ = fanout(server, window=1).run(tasks("double", list(range(6))),
                                              on_outcome=lambda o: stop.set(), stop=stop)
    done = [o for o in outcomes if o.status == SUCCEEDED]
    assert 1 <= len(done) < 6
    assert all(o.error == INTERRUPTED for o in outcomes if o.status == FAILED)


def test_credentials_come_from_the_environment_or_wskprops(tmp_path: Path) -> None:
    props = tmp_path / "wskprops"
    props.write_text(f"APIHOST=127.0.0.1:3233\nAUTH={AUTH}\nNAMESPACE=guest\n")
    found = Credentials.resolve({"WSK_CONFIG_FILE": str(props)})
    assert (found.apihost, found.namespace) == ("https://127.0.0.1:3233", "guest")
    assert AUTH not in repr(found)
    env = {"WSK_CONFIG_FILE": str(props), "OW_APIHOST": "http://h:1", "OW_AUTH": "a:b"}
    assert Credentials.resolve(env).apihost == "http://h:1"
    with pytest.raises(ConfigError, match="OW_APIHOST and OW_AUTH"):
        Credentials.resolve({"WSK_CONFIG_FILE": str(tmp_path / "none")})


def test_a_killed_action_process_is_retried(server: DevServer, client: Client,
                                            tmp_path: Path) -> None:
    marker = tmp_path / "killed-once"
    client.action("fragile", f"""
import os, signal
def main(p):
    try:
        os.close(os.open({str(marker)!r}, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return {{"n": p["n"]}}
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
""")
    outcomes, stats = fanout(server, max_attempts=3).run(tasks("fragile", [5]))
    (outcome,) = outcomes
    assert outcome.status == SUCCEEDED and outcome.result == {"n": 5}
    assert outcome.attempts == 2 and stats.retries == 1 and stats.invocations == 2
