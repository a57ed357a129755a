"""The fan-out client against ``owdedup serve``: every task ends once, with a precise status."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from owdedup.mapper import COMPUTED, MapRequest
from owdedup.mapper import FAILED as MAP_FAILED
from owdedup.openwhisk.client import Credentials, OpenWhiskClient, Reply
from owdedup.openwhisk.fanout import (
    ABANDONED,
    FAILED,
    INTERRUPTED,
    SUCCEEDED,
    FanOut,
    FanOutPolicy,
    Task,
)
from owdedup.openwhisk.mapping import run_platform_map
from owdedup.runtime.config import ENV_RECORDS, ENV_STORE
from owdedup.runtime.errors import ConfigError
from owdedup.serve.server import DevServer
from tests.imagegen import jpeg
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


def test_the_deadline_counts_from_a_tasks_first_attempt_not_from_the_run(
        server: DevServer, client: Client) -> None:
    # One at a time, each call ~1 s: the last task starts ~3 s into the run, past a 2.5 s
    # deadline counted from the start; a task's deadline bounds its own attempts only.
    client.action("second", "import time\ndef main(p):\n    time.sleep(1)\n"
                            "    return {'n': p['n']}\n")
    outcomes, _ = fanout(server, window=1, task_deadline_s=2.5).run(
        tasks("second", [0, 1, 2, 3]))
    assert [(o.status, o.error) for o in outcomes] == [(SUCCEEDED, None)] * 4


class _ThrottledThenServed(OpenWhiskClient):
    """Answers 429 to the first *refusals* invocations, then succeeds. A full window of
    simultaneous 429s cannot be provoked deterministically through serve (its concurrency
    count lags its admissions), so this stands in for the platform's replies."""

    def __init__(self, refusals: int) -> None:
        super().__init__(Credentials("http://127.0.0.1:9", "user:key"))
        self._lock = threading.Lock()
        self._refusals = refusals

    def invoke(self, action: str, params: Mapping[str, Any], *, blocking: bool,
               timeout_ms: int | None = None) -> Reply:
        with self._lock:
            self._refusals -= 1
            refuse = self._refusals >= 0
        if refuse:
            return Reply(429, {"error": "Too many concurrent requests in flight "
                                        "(count: 8, allowed: 8)."})
        return Reply(200, {"activationId": "a1", "duration": 1,
                           "response": {"success": True, "status": "success",
                                        "result": {"n": params["n"]}}})


def test_a_window_of_simultaneous_429s_halves_the_window_once() -> None:
    policy = FanOutPolicy(**{**FAST, "window": 8})  # type: ignore[arg-type]
    fan = FanOut(_ThrottledThenServed(refusals=8), policy)
    outcomes, stats = fan.run(tasks("double", list(range(8))))
    assert [o.status for o in outcomes] == [SUCCEEDED] * 8
    assert stats.throttled == 8
    # One congestion event (8 answers to one window) is one decrease: 8 -> 4, not 8 -> 1,
    # which would then take thousands of successes to climb back.
    assert stats.window_min == 4


def test_a_backup_races_loser_stops_polling_once_the_task_is_settled(
        make_server: ServerFactory, tmp_path: Path) -> None:
    # Every call polls (serve stops waiting after 0.2 s); the first call of n=0 sleeps 30 s
    # and loses to its backup. Its worker thread must not poll on to the task's deadline:
    # executor threads are joined at interpreter exit, so `owdedup map` would hang there.
    server = make_server(blocking_wait_s=0.2)
    marker = tmp_path / "first-call"
    Client(server.url).action("lagger", f"""
import os, time
def main(p):
    if p["n"] == 0:
        try:
            os.close(os.open({str(marker)!r}, os.O_CREAT | os.O_EXCL))
            time.sleep(30)
        except FileExistsError:
            pass
    return {{"n": p["n"]}}
""")
    before = set(threading.enumerate())
    outcomes, stats = fanout(server, window=4, straggler_after=0.5, straggler_factor=3,
                             straggler_min_s=1.0).run(tasks("lagger", list(range(8))))
    assert [o.status for o in outcomes] == [SUCCEEDED] * 8 and stats.backups >= 1
    left = [t for t in threading.enumerate()
            if t not in before and t.name.startswith("owdedup-fanout")]
    for thread in left:
        thread.join(timeout=10)  # well before the loser's 30 s sleep ends
    assert [t.name for t in left if t.is_alive()] == []


class _Garbled(OpenWhiskClient):
    """A platform (or a proxy in front of it) answering 200 with a body that is JSON but no
    activation record."""

    def __init__(self) -> None:
        super().__init__(Credentials("http://127.0.0.1:9", "user:key"))

    def invoke(self, action: str, params: Mapping[str, Any], *, blocking: bool,
               timeout_ms: int | None = None) -> Reply:
        return Reply(200, {"activationId": "a1", "duration": "soon", "response": "fine"})


def test_an_unreadable_activation_is_retried_then_reported_not_raised() -> None:
    policy = FanOutPolicy(**{**FAST, "max_attempts": 2})  # type: ignore[arg-type]
    outcomes, stats = FanOut(_Garbled(), policy).run(tasks("double", [1, 2]))
    assert [o.status for o in outcomes] == [FAILED] * 2
    assert all("without a readable activation (after 2 attempts)" in (o.error or "")
               for o in outcomes)
    assert stats.invocations == 4 and stats.retries == 2


def test_a_window_wider_than_64_keeps_its_connections(
        server: DevServer, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    # OpenWhisk's default concurrentInvocations is 100: a connection pool smaller than the
    # window discards (and later re-opens) a connection per extra request, and says so on
    # stderr for each one ("Connection pool is full, discarding connection").
    client.action("nap", "import time\ndef main(p):\n    time.sleep(0.3)\n    return {}\n")
    outcomes, _ = fanout(server, window=80).run(tasks("nap", [0] * 80))
    assert [o.status for o in outcomes] == [SUCCEEDED] * 80
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_a_second_ctrl_c_abandons_what_is_in_flight_and_keeps_what_is_done(
        server: DevServer, client: Client) -> None:
    # The first Ctrl-C sets `stop`; the second raises KeyboardInterrupt in the main thread,
    # where run() waits. The run must still return: done tasks kept, the rest reported.
    client.action("double", DOUBLE)
    client.action("sleepy", "import time\ndef main(p):\n    time.sleep(30)\n    return {}\n",
                  limits={"timeout": 60000})
    fan = fanout(server, window=2)
    stop = threading.Event()

    def ctrl_c_twice() -> None:
        stop.set()
        os.kill(os.getpid(), signal.SIGINT)

    interrupt = threading.Timer(1.5, ctrl_c_twice)
    interrupt.start()
    try:
        outcomes, _ = fan.run([Task("quick", "double", {"n": 1}), *tasks("sleepy", [0, 1]),
                               Task("later", "sleepy", {})], stop=stop)
    except KeyboardInterrupt:
        pytest.fail("a second Ctrl-C lost every result of the run")
    finally:
        interrupt.cancel()
    assert [(o.key, o.status, o.error) for o in outcomes] == [
        ("quick", SUCCEEDED, None), ("k0", FAILED, ABANDONED), ("k1", FAILED, ABANDONED),
        ("later", FAILED, INTERRUPTED)]


class _SlowFirstThenThrottled(OpenWhiskClient):
    """k0's first call takes 3 s and succeeds; its second call (the backup) meets a 429;
    every other call succeeds at once."""

    def __init__(self) -> None:
        super().__init__(Credentials("http://127.0.0.1:9", "user:key"))
        self._lock = threading.Lock()
        self._k0_calls = 0

    def invoke(self, action: str, params: Mapping[str, Any], *, blocking: bool,
               timeout_ms: int | None = None) -> Reply:
        if params["n"] == 0:
            with self._lock:
                self._k0_calls += 1
                first = self._k0_calls == 1
            if not first:
                return Reply(429, {"error": "Too many requests in the last minute "
                                            "(count: 121, allowed: 120)."})
            time.sleep(3)
        return Reply(200, {"activationId": "a", "duration": 1,
                           "response": {"success": True, "status": "success",
                                        "result": {"n": params["n"]}}})


def test_a_throttled_backup_does_not_uncount_the_original_attempt() -> None:
    policy = FanOutPolicy(**{**FAST, "window": 4, "straggler_after": 0.5,  # type: ignore[arg-type]
                             "straggler_factor": 3, "straggler_min_s": 0.5})
    outcomes, stats = FanOut(_SlowFirstThenThrottled(), policy).run(
        tasks("double", list(range(8))))
    assert [o.status for o in outcomes] == [SUCCEEDED] * 8
    assert stats.backups == 1 and stats.throttled == 1
    assert outcomes[0].attempts == 1  # the original's; the backup's 429 took none away


# -- map --platform openwhisk stopped by Ctrl-C (the CLI end to end: tests/services) -----------


class _StopsTheRunWhenInvoked(OpenWhiskClient):
    """Computes each object it is sent (as the deployed sequence answers) and sets *stop*
    on the first call, as a Ctrl-C during it would."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(Credentials("http://127.0.0.1:9", "user:key"))
        self.stop = stop
        self.invoked: list[str] = []

    def invoke(self, action: str, params: Mapping[str, Any], *, blocking: bool,
               timeout_ms: int | None = None) -> Reply:
        self.invoked.append(params["key"])
        self.stop.set()
        return Reply(200, {"activationId": "a1", "duration": 1, "response": {
            "success": True, "status": "success",
            "result": {"status": "computed", "key": params["key"], "outputs": []}}})


def folder_map(tmp_path: Path, objects: dict[str, bytes]) -> tuple[MapRequest, list[str]]:
    """A map request over a folder store holding *objects*, with a SQLite record store."""
    bucket = tmp_path / "store" / "in"
    bucket.mkdir(parents=True)
    for key, data in objects.items():
        (bucket / key).write_bytes(data)
    env = {ENV_STORE: (tmp_path / "store").as_uri(),
           ENV_RECORDS: f"sqlite://{tmp_path / 'records.sqlite'}"}
    request = MapRequest(function="thumbnail", sequence="owdedup/dedup-thumbnail",
                         hash_action="owdedup/hash", src_bucket="in", dest_bucket="out",
                         params={"sizes": "64"}, env=env)
    return request, sorted(objects)


def test_objects_stopped_before_their_turn_say_interrupted(tmp_path: Path) -> None:
    request, keys = folder_map(tmp_path, {f"p{n}.jpg": jpeg(40 + n, 30) for n in range(4)})
    stop = threading.Event()
    client = _StopsTheRunWhenInvoked(stop)
    summary, report = run_platform_map(request, keys, FanOut(client, FanOutPolicy(window=1)),
                                       stop=stop)
    assert client.invoked == ["p0.jpg"] and report.fanout.invocations == 1
    assert [(r.key, r.status, r.error) for r in summary.results] == [
        ("p0.jpg", COMPUTED, None),
        *((k, MAP_FAILED, f"{k}: {INTERRUPTED}") for k in keys[1:])]


def test_ctrl_c_while_hashing_stops_the_hashing(tmp_path: Path) -> None:
    request, keys = folder_map(tmp_path, {f"p{n}.jpg": jpeg(40 + n, 30) for n in range(6)})
    stop = threading.Event()
    stop.set()  # before the first hash
    hashed: list[str] = []
    client = _StopsTheRunWhenInvoked(stop)
    summary, _ = run_platform_map(request, keys, FanOut(client, FanOutPolicy(window=1)),
                                  on_hashed=hashed.append, stop=stop)
    assert hashed == [] and client.invoked == []
    assert [(r.key, r.status, r.error) for r in summary.results] == [
        (k, MAP_FAILED, f"{k}: {INTERRUPTED}") for k in keys]
