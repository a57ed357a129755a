"""Identical wrapped calls in flight run once: the lease protocol (``runtime.inflight``) for
the decorator and the conductor. On a miss the caller claims the call's key; another caller
waits for the holder's recorded result and returns it as a hit marked ``coalesced``.

The decorator holds its lease while it computes, as the compute step does. The conductor
cannot: the wrapped action runs after its first activation has ended. Its lease is claimed
by the first activation for as long as the wrapped action may run (its time limit, read
from its definition, plus a margin), travels in the signed state, and is let go by the
second activation, whether it recorded a result or got an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from owdedup.runtime.errors import OwdedupError
from owdedup.runtime.inflight import Claimant, Turn, deadline_of, owner_of
from owdedup.runtime.platform import get_entity
from owdedup.runtime.records import Lease, Record, RecordStore
from owdedup.runtime.stores import ObjectStore
from owdedup.runtime.wrapped.identity import qualified
from owdedup.runtime.wrapped.keying import CallKey
from owdedup.runtime.wrapped.results import find_result, hit_metadata

log = logging.getLogger("owdedup")

#: The lease of a wrapped action whose time limit is not known (a pinned version, a
#: sequence, a definition that cannot be read): OpenWhisk's default longest limit.
UNKNOWN_TIMEOUT_S = 300.0
#: Beyond the wrapped action's own limit: starting it and the conductor's second activation.
LEASE_MARGIN_S = 30.0
#: How long a definition's time limit is kept by a warm container.
TIMEOUT_KEPT_S = 60.0
_TIMEOUTS: dict[str, tuple[float, float]] = {}  # action -> (limit in s, when it was read)


def claimant_for(records: RecordStore, env: Mapping[str, str],
                 lease_s: float | None = None) -> Claimant:
    return Claimant(records, owner_of(env), deadline_of(env), lease_s=lease_s)


def conductor_lease_s(action: str, env: Mapping[str, str], *, pinned: bool) -> float:
    """How long the conductor's lease on a call of *action* lasts: its time limit (OpenWhisk's
    ``limits.timeout``) plus a margin."""
    return wrapped_timeout_s(action, env, pinned=pinned) + LEASE_MARGIN_S


def wrapped_timeout_s(action: str, env: Mapping[str, str], *, pinned: bool) -> float:
    if pinned:  # the conductor reads no definition then; nor does its lease
        return UNKNOWN_TIMEOUT_S
    kept = _TIMEOUTS.get(action)
    if kept is not None and time.monotonic() - kept[1] < TIMEOUT_KEPT_S:
        return kept[0]
    namespace, relative = qualified(action, env)
    path = f"{quote(namespace, safe='')}/actions/{quote(relative, safe='/')}?code=false"
    try:
        doc = get_entity(path, env, f"cannot read the time limit of {action}")
    except OwdedupError as exc:
        log.warning("lease of %s for its longest time limit: %s", action, exc)
        return UNKNOWN_TIMEOUT_S
    limits = (doc or {}).get("limits")
    exec_ = (doc or {}).get("exec")
    timeout_ms = limits.get("timeout") if isinstance(limits, dict) else None
    if (not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms <= 0
            or (isinstance(exec_, dict) and exec_.get("kind") == "sequence")):
        timeout_s = UNKNOWN_TIMEOUT_S  # a sequence runs its components' limits one by one
    else:
        timeout_s = timeout_ms / 1000
    _TIMEOUTS[action] = (timeout_s, time.monotonic())
    return timeout_s


def lease_state(lease: Lease | None) -> dict[str, Any]:
    """What the conductor's state carries of its lease (signed with the state)."""
    if lease is None:
        return {}
    return {"lease": {"owner": lease.owner, "expires_at": lease.expires_at,
                      "revision": lease.revision}}


def release_from_state(state: Mapping[str, Any], call: CallKey, records: RecordStore) -> None:
    """Let go of the lease the (verified) *state* carries, if any; a failure is logged (the
    lease then expires by itself)."""
    held = state.get("lease")
    if not isinstance(held, dict):
        return
    try:
        lease = Lease(call.function_id, call.input_digest, str(held["owner"]),
                      float(held["expires_at"]), str(held["revision"]))
        records.release(lease)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("the state's lease on %s is incomplete: %s", call.function, exc)
    except OwdedupError as exc:
        log.warning("could not release the lease on %s: %s", call.function, exc)


def lease_not_held(state: Mapping[str, Any], call: CallKey, records: RecordStore) -> str | None:
    """None when the lease the (verified) *state* carries is still held as it was written;
    else why not: a state with no lease, or one let go or taken over, may not record."""
    held = state.get("lease")
    if not isinstance(held, dict):
        return "the call held no lease on its key"
    try:
        current = records.get_lease(call.function_id, call.input_digest)
    except OwdedupError as exc:
        return f"its lease cannot be checked: {exc}"
    if current is None or current.revision != str(held.get("revision")):
        return "its lease was let go or taken over"
    return None


def await_or_claim(call: CallKey, records: RecordStore, store: ObjectStore | None,
                   claimant: Claimant) -> tuple[Record | None, Turn]:
    """After a miss: (the result another caller recorded while this one waited, or None,
    with the turn: compute holding ``turn.lease`` if it is set)."""
    found: list[Record] = []

    def answered() -> bool:
        record = find_result(call, records, store)
        if record is None or record.result is None:
            return False
        found.append(record)
        return True

    turn = claimant.take_turn(call.function_id, call.input_digest, answered)
    return (found[-1] if turn.answered and found else None), turn


def coalesced_metadata(record: Record, turn: Turn) -> dict[str, Any]:
    """A hit's metadata, saying it came from an identical call in flight and how long it
    waited for it."""
    return {**hit_metadata(record), "coalesced": True,
            "waited_ms": round(turn.waited_s * 1000, 1)}
