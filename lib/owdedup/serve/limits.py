"""A namespace's invocation limits, enforced as OpenWhisk's controller enforces them.

OpenWhisk checks two throttles when it accepts an action invocation and one for a trigger
fire (``core/controller/.../entitlement``):

* a rate per epoch minute (``RateThrottler``): every request is charged first, then allowed
  while the minute's count is at most the limit, so a refused request counts too;
* concurrency (``ActivationThrottler``): the activations of the namespace in flight at the
  invokers — every action activation (a sequence's components, a conductor's own and its
  components' included), queued or running —
  must be below the limit when the request arrives.

A sequence or a conductor is one request for the rate, however many components it runs.
Refusals are 429s worded as OpenWhisk words them. The defaults are core's
(``whisk.limits.actions.invokes``: 120 a minute, 100 concurrent; 60 fires a minute).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from owdedup.engine.pool import ContainerPool
from owdedup.serve.errors import ApiError


class TooManyRequests(ApiError):
    status = 429


def too_many_requests(count: int, allowed: int) -> str:
    return f"Too many requests in the last minute (count: {count}, allowed: {allowed})."


def too_many_concurrent(count: int, allowed: int) -> str:
    return f"Too many concurrent requests in flight (count: {count}, allowed: {allowed})."


#: OpenWhisk's names for the limits (``UserLimits``), as the API and ``wskadmin`` say them.
API_NAMES = {"invocations_per_minute": "invocationsPerMinute",
             "concurrent_invocations": "concurrentInvocations",
             "fires_per_minute": "firesPerMinute"}


@dataclass(frozen=True)
class NamespaceLimits:
    invocations_per_minute: int = 120
    concurrent_invocations: int = 100
    fires_per_minute: int = 60

    @classmethod
    def parse(cls, spec: str) -> NamespaceLimits:
        """``"invocationsPerMinute=600,concurrentInvocations=8"`` over the defaults."""
        by_api_name = {api: field for field, api in API_NAMES.items()}
        known = set(by_api_name)
        values: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, value = item.partition("=")
            if not sep or name.strip() not in known:
                raise ValueError(f"bad limit {item!r}: say NAME=N with NAME one of "
                                 f"{', '.join(sorted(known))}")
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"bad limit {item!r}: {value!r} is not a whole number") from None
            if number < 1:
                raise ValueError(f"bad limit {item!r}: must be at least 1")
            values[by_api_name[name.strip()]] = number
        return cls(**values)

    def to_json(self) -> dict[str, int]:
        return {API_NAMES[f.name]: getattr(self, f.name) for f in fields(self)}


class _MinuteCounter:
    """Requests in the current epoch minute (OpenWhisk's ``RateInfo``)."""

    def __init__(self, clock_s: Callable[[], float]) -> None:
        self._clock_s = clock_s
        self._minute = -1
        self._count = 0

    def charge(self) -> int:
        minute = int(self._clock_s() // 60)
        if minute != self._minute:
            self._minute, self._count = minute, 0
        self._count += 1
        return self._count


class Throttle:
    """Admits or refuses requests of one namespace (thread-safe)."""

    def __init__(self, limits: NamespaceLimits, in_flight: ContainerPool, *,
                 clock_s: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.in_flight = in_flight
        self._lock = threading.Lock()
        self._invokes = _MinuteCounter(clock_s)
        self._fires = _MinuteCounter(clock_s)

    def admit_invoke(self) -> None:
        with self._lock:
            count = self._invokes.charge()
        if count > self.limits.invocations_per_minute:
            raise TooManyRequests(too_many_requests(count, self.limits.invocations_per_minute))
        active = self.in_flight.in_flight
        if active >= self.limits.concurrent_invocations:
            raise TooManyRequests(too_many_concurrent(active, self.limits.concurrent_invocations))

    def admit_fire(self) -> None:
        with self._lock:
            count = self._fires.charge()
        if count > self.limits.fires_per_minute:
            raise TooManyRequests(too_many_requests(count, self.limits.fires_per_minute))
