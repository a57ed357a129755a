"""Hit and miss counters, buffered so that counting stays off the hit path.

A lookup would otherwise pay one write per call (a counter row in SQLite, a counter document
in CouchDB) on top of its one read. Counts accumulate in the process and are written every
``max_pending`` lookups or ``max_age_s`` seconds, and when the process exits. A warm
OpenWhisk container flushes on a later activation; counts of a container that is destroyed
before its next flush are lost, which only makes ``owdedup stats`` an underestimate.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from owdedup.runtime.errors import OwdedupError
from owdedup.runtime.records import RecordStore

log = logging.getLogger("owdedup")


def hit_saved_bytes(input_bytes: int, output_bytes: Iterable[int]) -> int:
    """Bytes a hit saves: the input not read again plus the outputs not rewritten."""
    return input_bytes + sum(output_bytes)


@dataclass
class _Counts:
    hits: int = 0
    misses: int = 0
    saved_ms: float = 0.0
    saved_bytes: int = 0
    coalesced: int = 0
    refused: int = 0
    took_over: int = 0


@dataclass
class CountBuffer:
    records: Callable[[], RecordStore]
    max_pending: int = 100
    max_age_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _pending: dict[str, _Counts] = field(default_factory=dict)
    _calls: int = 0
    _since: float | None = None
    _registered: bool = False

    def add(self, function: str, *, hits: int = 0, misses: int = 0, saved_ms: float = 0.0,
            saved_bytes: int = 0, coalesced: int = 0, refused: int = 0,
            took_over: int = 0) -> None:
        counts = self._pending.setdefault(function, _Counts())
        counts.hits += hits
        counts.misses += misses
        counts.saved_ms += saved_ms
        counts.saved_bytes += saved_bytes
        counts.coalesced += coalesced
        counts.refused += refused
        counts.took_over += took_over
        self._calls += 1
        if self._since is None:
            self._since = self.clock()
        if not self._registered:
            atexit.register(self.flush)
            self._registered = True
        if self._calls >= self.max_pending or self.clock() - self._since >= self.max_age_s:
            self.flush()

    def flush(self) -> None:
        """Write what is pending; on failure keep it for the next try (never raises).

        A failed write restarts the batch (call count and age) so the retry waits for the
        next ``max_pending`` calls or ``max_age_s`` seconds instead of every later add()
        paying another round trip to a store that is down.
        """
        if not self._pending:
            return
        try:
            store = self.records()
            for function, counts in list(self._pending.items()):
                store.add_counts(function, hits=counts.hits, misses=counts.misses,
                                 saved_ms=counts.saved_ms, saved_bytes=counts.saved_bytes,
                                 coalesced=counts.coalesced, refused=counts.refused,
                                 took_over=counts.took_over)
                del self._pending[function]
        except OwdedupError as exc:
            log.warning("could not write hit counters (kept for later): %s", exc)
            self._calls, self._since = 0, self.clock()
            return
        self._calls, self._since = 0, None

    def close(self) -> None:
        """Flush, and no longer flush at exit: the owner is done with this buffer (a
        long-lived process that opens many would otherwise keep one exit hook for each)."""
        self.flush()
        if self._registered:
            atexit.unregister(self.flush)
            self._registered = False
