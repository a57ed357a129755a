"""Namespace limits in serve, as OpenWhisk's controller enforces them, and the fan-out
client absorbing the 429s they cause."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from owdedup.engine.pool import ContainerPool
from owdedup.openwhisk.client import Credentials, OpenWhiskClient
from owdedup.openwhisk.fanout import SUCCEEDED, FanOut, FanOutPolicy, Task
from owdedup.runtime import platform
from owdedup.runtime.errors import StoreError
from owdedup.serve.limits import NamespaceLimits, Throttle, TooManyRequests
from tests.serve.conftest import AUTH, Client, ServerFactory, wait_for

SLEEPER = "import time\ndef main(p):\n    time.sleep(p.get('s', 0))\n    return {'n': p.get('n')}\n"


class FakeClock:
    def __init__(self, now: float = 600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_per_epoch_minute_and_refusals_count() -> None:
    clock = FakeClock(600.0)
    throttle = Throttle(NamespaceLimits(invocations_per_minute=2), ContainerPool(),
                        clock_s=clock)
    throttle.admit_invoke()
    throttle.admit_invoke()
    with pytest.raises(TooManyRequests, match=r"^Too many requests in the last minute "
                                              r"\(count: 3, allowed: 2\)\.$"):
        throttle.admit_invoke()
    with pytest.raises(TooManyRequests, match=r"count: 4, allowed: 2"):
        throttle.admit_invoke()
    clock.now = 659.9  # the same minute
    with pytest.raises(TooManyRequests):
        throttle.admit_invoke()
    clock.now = 660.0  # the next one starts afresh
    throttle.admit_invoke()


def test_limits_parse_as_wskadmin_names_them() -> None:
    limits = NamespaceLimits.parse("invocationsPerMinute=600, concurrentInvocations=8")
    assert limits.to_json() == {"invocationsPerMinute": 600, "concurrentInvocations": 8,
                                "firesPerMinute": 60}
    for bad in ("nope=1", "firesPerMinute", "firesPerMinute=x", "firesPerMinute=0"):
        with pytest.raises(ValueError, match="bad limit"):
            NamespaceLimits.parse(bad)


def within_one_minute(check: Callable[[], None]) -> None:
    """Run *check* again if an epoch minute ended during it (the counts start afresh)."""
    for _ in range(2):
        minute = int(time.time() // 60)
        check()
        if int(time.time() // 60) == minute:
            return
    raise AssertionError("two minute boundaries in a row")


def test_invocations_past_the_rate_get_openwhisks_429(make_server: ServerFactory) -> None:
    def check() -> None:
        server = make_server(limits=NamespaceLimits(invocations_per_minute=2))
        client = Client(server.url)
        client.action("a", SLEEPER)
        client.request("PUT", "actions/seq?overwrite=true",
                       {"exec": {"kind": "sequence", "components": ["/_/a", "/_/a", "/_/a"]}})
        assert client.request("GET", "limits").json["invocationsPerMinute"] == 2
        # A sequence of three actions is one request for the rate, as in OpenWhisk.
        assert client.invoke("seq").status == 200
        assert client.invoke("a").status == 200
        refused = client.invoke("a")
        assert refused.status == 429
        assert refused.json["error"] == ("Too many requests in the last minute "
                                         "(count: 3, allowed: 2).")
        assert refused.json["code"]

    within_one_minute(check)


def test_concurrent_invocations_past_the_limit_get_429(make_server: ServerFactory) -> None:
    server = make_server(limits=NamespaceLimits(concurrent_invocations=2))
    client = Client(server.url)
    client.action("slow", SLEEPER)
    for _ in range(2):
        assert client.invoke("slow", {"s": 3}, blocking=False).status == 202
    pool = server.controller.throttle.in_flight
    wait_for(lambda: pool.in_flight == 2, what="two activations in flight")
    refused = client.invoke("slow")
    assert refused.status == 429
    assert refused.json["error"] == ("Too many concurrent requests in flight "
                                     "(count: 2, allowed: 2).")


def test_fires_past_the_rate_get_429(make_server: ServerFactory) -> None:
    def check() -> None:
        server = make_server(limits=NamespaceLimits(fires_per_minute=1))
        client = Client(server.url)
        client.action("a", SLEEPER)
        client.put("triggers/t", {})
        client.put("rules/r", {"trigger": "/_/t", "action": "/_/a"})
        assert client.request("POST", "triggers/t", {}).status == 202
        refused = client.request("POST", "triggers/t", {})
        assert refused.status == 429 and "allowed: 1" in refused.json["error"]

    within_one_minute(check)


def test_a_full_container_pool_queues_and_says_how_long(make_server: ServerFactory) -> None:
    server = make_server(containers=1)
    client = Client(server.url)
    client.action("slow", SLEEPER)
    ids = [client.invoke("slow", {"s": 0.5, "n": n}, blocking=False).json["activationId"]
           for n in range(2)]
    first, second = sorted((client.activation(i, timeout=60).json for i in ids),
                           key=lambda a: a["start"])
    assert second["start"] >= first["end"]  # never two at once in one container

    def wait_ms(record: dict[str, object]) -> int:
        annotations = record["annotations"]
        assert isinstance(annotations, list)
        return int(next(a["value"] for a in annotations if a["key"] == "waitTime"))

    assert wait_ms(second) >= second["start"] - first["start"] - 50


def test_the_fan_out_absorbs_429s_and_loses_nothing(make_server: ServerFactory) -> None:
    server = make_server(limits=NamespaceLimits(concurrent_invocations=3), containers=2)
    Client(server.url).action("slow", SLEEPER)
    fanout = FanOut(OpenWhiskClient(Credentials(server.url, AUTH)),
                    FanOutPolicy(window=8, backoff_initial_s=0.05, backoff_max_s=0.2,
                                 poll_initial_s=0.02, poll_max_s=0.1, straggler_factor=0))
    tasks = [Task(f"k{n}", "slow", {"s": 0.2, "n": n}) for n in range(16)]
    outcomes, stats = fanout.run(tasks)
    assert [o.status for o in outcomes] == [SUCCEEDED] * 16
    assert [o.result for o in outcomes] == [{"n": n} for n in range(16)]
    assert stats.throttled > 0 and stats.invocations == 16 and stats.lost == 0
    assert stats.window_min < 8  # the window came down to what the namespace allows


def test_an_action_invoking_another_waits_out_a_429(make_server: ServerFactory) -> None:
    """``dispatch`` starts one sequence per upload: a 429 must delay it, never drop it."""
    server = make_server(limits=NamespaceLimits(concurrent_invocations=1))
    client = Client(server.url)
    client.action("slow", SLEEPER)
    pool = server.controller.throttle.in_flight

    def occupy(seconds: float) -> None:
        assert client.invoke("slow", {"s": seconds}, blocking=False).status == 202
        wait_for(lambda: pool.in_flight == 1, what="the namespace's one activation")

    def env(budget_s: float) -> dict[str, str]:
        return {"__OW_API_HOST": server.url, "__OW_API_KEY": AUTH,
                "__OW_DEADLINE": str(int((time.time() + budget_s) * 1000))}

    occupy(1.5)
    call = platform.invoke_rest("slow", {"n": 7}, True, env(30))
    assert call.success and call.result == {"n": 7}
    occupy(5)
    with pytest.raises(StoreError, match=r"stayed at its limits \(429 .*Too many concurrent"):
        platform.invoke_rest("slow", {"n": 8}, True, env(2.5))


@pytest.mark.parametrize(("warm", "cold_again"), [(2, 1), (3, 0)])
def test_idle_processes_kept_per_action_are_what_warm_says(
        make_server: ServerFactory, warm: int, cold_again: int) -> None:
    """Three at once, twice: the second wave finds ``warm`` processes of the first (serve's
    default 2 leaves one cold start; ``--warm 3`` none)."""
    server = make_server(containers=3, warm_per_action=warm)
    client = Client(server.url)
    client.action("slow", SLEEPER)

    def wave() -> int:
        ids = [client.invoke("slow", {"s": 0.5, "n": n}, blocking=False).json["activationId"]
               for n in range(3)]
        records = [client.activation(i, timeout=60).json for i in ids]
        return sum(any(a["key"] == "initTime" for a in r["annotations"]) for r in records)

    assert wave() == 3
    assert wave() == cold_again
