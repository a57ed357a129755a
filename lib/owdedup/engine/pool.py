"""How many action activations run at once: an invoker's container pool.

Every action activation (a sequence's components too) passes through :meth:`activation`:
it is *in flight* from the moment it asks until it ends, and runs only when one of the pool's
containers is free, the others waiting their turn. The time waited is the record's
``waitTime``; the count in flight is what OpenWhisk's concurrency throttle compares with the
namespace's ``concurrentInvocations``.

An action that invokes another and waits for it holds its container while it waits, so N
such actions can take all N containers and leave their callees queued: no progress until
the callers' own timeouts kill them and free the containers (the callers' blocking invokes
answer 202 after their wait, as OpenWhisk's do). This is what one OpenWhisk invoker does
too: its pool is memory, a waiting action keeps its memory, and the invoker does not
preempt it; a cluster only hides it by placing the callee on another invoker. Serve does
not deadlock forever, but it does not hide it either: compose with sequences or conductors
(a sequence holds no container between its components), invoke without waiting, or raise
``--containers`` above the number of callers that may wait at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ContainerPool:
    def __init__(self, containers: int | None = None) -> None:
        if containers is not None and containers < 1:
            raise ValueError("a container pool needs at least one container")
        self.containers = containers  # None: as many as asked for
        self._condition = threading.Condition()
        self._running = 0
        self.in_flight = 0  # waiting + running

    @contextmanager
    def activation(self) -> Iterator[None]:
        with self._condition:
            self.in_flight += 1
            while self.containers is not None and self._running >= self.containers:
                self._condition.wait()
            self._running += 1
        try:
            yield
        finally:
            with self._condition:
                self._running -= 1
                self.in_flight -= 1
                self._condition.notify()
