"""From upload events to one sequence invocation per created object.

This is what the rule on the upload trigger runs: OpenWhisk's Kafka feed fires the trigger
with a batch of messages, and a rule can start only one action per fire, so this action fans
the batch out. Events for the output bucket are dropped here: the thumbnails we write would
otherwise trigger their own thumbnails.
"""

from __future__ import annotations

import logging
from typing import Any

from owdedup.runtime import platform
from owdedup.runtime.errors import OwdedupError
from owdedup.runtime.events import parse_events

log = logging.getLogger("owdedup")

# What a dispatched sequence's result tells the caller, when it is known (local engine).
_OUTCOME_FIELDS = ("status", "recorded", "error", "error_kind")


def dispatch_events(
    payload: dict[str, Any], *, sequence: str, dest_bucket: str
) -> dict[str, Any]:
    """Invoke *sequence* for every created object in *payload* (non-blocking on OpenWhisk)."""
    parsed = parse_events(payload, ignore_buckets=[dest_bucket])
    for error in parsed.errors:
        log.warning("unreadable event skipped: %s", error)
    invoked = []
    for event in parsed.objects:
        params = {"bucket": event.bucket, "key": event.key}
        try:
            call = platform.invoke(sequence, params, blocking=False)
        except OwdedupError as exc:
            # Not a bad object but a platform failure: say so, so the event is redelivered.
            raise OwdedupError(f"could not start {sequence} for {event.bucket}/{event.key}: "
                               f"{exc}") from exc
        entry: dict[str, Any] = {**params, "activation_id": call.activation_id,
                                 "success": call.success}
        if call.result is not None:
            entry.update({k: call.result[k] for k in _OUTCOME_FIELDS if k in call.result})
        invoked.append(entry)
    return {"objects": len(parsed.objects), "invoked": invoked, "skipped": parsed.skipped,
            "unreadable": parsed.errors}
