"""Identical wrapped calls in flight run once: the lease protocol (``runtime.inflight``) for
the decorator and the conductor. On a miss the caller claims the call's key; another caller
waits for the holder's recorded result and returns it as a hit marked ``coalesced``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from owdedup.runtime.inflight import Claimant, Turn, deadline_of, owner_of
from owdedup.runtime.records import Record, RecordStore
from owdedup.runtime.stores import ObjectStore
from owdedup.runtime.wrapped.keying import CallKey
from owdedup.runtime.wrapped.results import find_result, hit_metadata


def claimant_for(records: RecordStore, env: Mapping[str, str]) -> Claimant:
    return Claimant(records, owner_of(env), deadline_of(env))


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
