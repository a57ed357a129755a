"""Identical work in flight runs once: the lease protocol around one computation.

On a miss, the activation about to compute first claims the record key
(:class:`~owdedup.runtime.records.base.Lease`, a create-if-absent write). Then:

* it **holds** the lease: it computes, renewing the lease while it works (a heartbeat every
  third of the lease, never past its own deadline), records the result and lets go;
  Having claimed, it looks at the records once more: a holder may have recorded and let go
  since this activation's lookup;
* another activation **holds** it: this one waits, polling the lease with bounded back-off,
  until the lease is gone (the holder finished or failed) or has expired (the holder was
  killed or timed out). Gone: the record answers it (a hit), or, if the holder failed, it
  claims the key itself. Expired: it takes the lease over (of several waiters exactly one
  does) and computes.

A waiter never waits past its share of its own time (``__OW_DEADLINE``): then it computes
itself. Every failure of the record store here is logged and answered by computing without a
lease. Whoever computes writes the same deterministic output under the same name, so a lost,
forged or doubly granted lease costs at worst a duplicate computation, never a wrong result.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from owdedup.runtime import env as env_names
from owdedup.runtime.errors import OwdedupError
from owdedup.runtime.platform import deadline_of
from owdedup.runtime.records import Lease, RecordStore

log = logging.getLogger("owdedup")

#: A lease's length: a killed holder delays its waiters by at most this. Renewed every
#: third of it while the holder computes.
LEASE_S = 30.0
RENEW_FRACTION = 1 / 3
#: The waiters' polling: the first pause, its growth, its ceiling (each pause jittered).
FIRST_POLL_S = 0.05
POLL_GROWTH = 1.5
MAX_POLL_S = 1.0
#: The share of a waiter's time left (to its deadline) it may spend waiting; with the rest
#: it can still compute itself.
WAIT_SHARE = 0.5
#: How long a waiter with no deadline (a local run) waits at most.
UNBOUNDED_WAIT_S = 900.0
#: A lease that claims to last longer than LEASE_S plus this is not believed (a forged lease,
#: or a clock far ahead): it is treated as expired.
CLOCK_SKEW_S = 60.0

__all__ = ["Claimant", "Turn", "deadline_of", "owner_of"]

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def owner_of(env: Mapping[str, str]) -> str:
    """Who holds a lease: the activation id, or (a local run) this host, process and call."""
    activation = env.get(env_names.OW_ACTIVATION_ID)
    if activation:
        return activation
    return f"local-{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"


@dataclass
class Turn:
    """What this activation does about a key: compute (holding *lease*, or with no lease when
    none could be had), or nothing because the result came in (*answered*)."""

    lease: Lease | None = None
    answered: bool = False
    took_over: bool = False
    waited_s: float = 0.0
    #: Lease reads while waiting (the record store requests a waiter costs, beside claims).
    polls: int = 0


@dataclass(frozen=True)
class Claimant:
    """One activation's side of the protocol: who it is, its deadline, its clock."""

    records: RecordStore
    owner: str
    deadline: float | None
    clock: Clock = time.time
    sleep: Sleep = time.sleep
    #: A fixed lease length that outlives this activation (the conductor's: the wrapped
    #: action computes after it, and its second activation lets go); None: LEASE_S, renewed
    #: while computing, never past this activation's deadline.
    lease_s: float | None = None

    def expiry(self, now: float) -> float:
        if self.lease_s is not None:
            return now + self.lease_s
        end = now + LEASE_S
        return end if self.deadline is None else min(end, self.deadline)

    def believed(self, lease: Lease, now: float) -> bool:
        """Whether to wait for *lease*: not expired, and not claiming more than a lease can."""
        longest = max(LEASE_S, self.lease_s or 0.0)
        return not lease.expired(now) and lease.expires_at <= now + longest + CLOCK_SKEW_S

    def take_turn(self, function_id: str, digest: str, answered: Callable[[], bool]) -> Turn:
        """Claim the key, or wait for its holder and come back answered (``answered()`` is
        True once the records hold the result), or take over an expired lease. A failing
        record store gives a turn with no lease: compute anyway."""
        try:
            return self._take_turn(function_id, digest, answered)
        except OwdedupError as exc:
            log.warning("lease on %s... unavailable, computing without one: %s",
                        digest[:12], exc)
            return Turn()

    def _take_turn(self, function_id: str, digest: str,
                   look: Callable[[], bool]) -> Turn:
        def answered() -> bool:
            try:
                return look()
            except OwdedupError as exc:  # then compute: a lease we hold is let go after
                log.warning("could not look up the records of %s...: %s", digest[:12], exc)
                return False

        start = now = self.clock()
        wait_until = (start + UNBOUNDED_WAIT_S if self.deadline is None
                      else start + max(0.0, self.deadline - start) * WAIT_SHARE)
        turn = Turn()
        lease, mine = self.records.claim(function_id, digest, self.owner, self.expiry(now))
        # Held by this very owner already: an activation asking again (OpenWhisk never
        # reuses an activation id), so it is this one's to compute.
        mine = mine or lease.owner == self.owner
        if mine and answered():
            # A holder recorded and let go between our lookup and our claim: nothing to do.
            self.records.release(lease)
            turn.answered = True
            return turn
        pause = FIRST_POLL_S
        while not mine:
            if not self.believed(lease, now):
                if answered():  # the holder recorded, then died before letting go
                    turn.answered = True
                    break
                lease, mine = self.records.take_over(lease, self.owner, self.expiry(now))
                turn.took_over = mine
                continue
            wait = pause * random.uniform(0.75, 1.0)
            if now + wait > wait_until:
                log.warning("gave up waiting for %s to compute %s...; computing as well",
                            lease.owner, digest[:12])
                break
            self.sleep(wait)
            pause = min(MAX_POLL_S, pause * POLL_GROWTH)
            now = self.clock()
            turn.polls += 1
            current = self.records.get_lease(function_id, digest)
            if current is not None:
                lease = current
                continue
            # Let go: the holder finished (its record answers us) or failed (we compute).
            if answered():
                turn.answered = True
                break
            lease, mine = self.records.claim(function_id, digest, self.owner, self.expiry(now))
        turn.waited_s = self.clock() - start
        turn.lease = lease if mine else None
        return turn

    @contextmanager
    def holding(self, lease: Lease | None) -> Iterator[None]:
        """Keep *lease* renewed while the block computes, and let it go afterwards, whether
        the block succeeded (the holder has recorded) or failed (a waiter computes)."""
        if lease is None:
            yield
            return
        heartbeat = _Heartbeat(self, lease)
        heartbeat.start()
        try:
            yield
        finally:
            held = heartbeat.stop()
            if held is not None:
                try:
                    self.records.release(held)
                except OwdedupError as exc:  # it expires by itself within LEASE_S
                    log.warning("could not release the lease on %s...: %s",
                                held.input_digest[:12], exc)


class _Heartbeat(threading.Thread):
    """Renews a lease every RENEW_FRACTION of it until stopped or lost."""

    def __init__(self, claimant: Claimant, lease: Lease) -> None:
        super().__init__(name="owdedup-lease", daemon=True)
        self.claimant, self.lease = claimant, lease
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._lost = False

    def run(self) -> None:
        while not self._stopping.wait(LEASE_S * RENEW_FRACTION):
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    renewed = self.claimant.records.renew(
                        self.lease, self.claimant.expiry(self.claimant.clock()))
                except OwdedupError as exc:  # try again next beat; meanwhile it may expire
                    log.warning("could not renew the lease on %s...: %s",
                                self.lease.input_digest[:12], exc)
                    continue
                if renewed is None:
                    # Taken over after it expired: the taker computes the same output.
                    log.warning("lost the lease on %s...; finishing the computation anyway",
                                self.lease.input_digest[:12])
                    self._lost = True
                    return
                self.lease = renewed

    def stop(self) -> Lease | None:
        """Stop renewing; the lease as last written, None if it was lost."""
        with self._lock:
            self._stopping.set()
        self.join()
        return None if self._lost else self.lease
