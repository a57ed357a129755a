"""Looking a wrapped call's result up, recording it, and what a caller is given back.

Shared by the conductor action and the decorator. A record store that fails only costs a
recomputation (it is logged, never raised): the caller's work comes first, as in joblib.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from owdedup.runtime.context import Context
from owdedup.runtime.errors import OwdedupError, StoreError
from owdedup.runtime.records import Record, RecordStore
from owdedup.runtime.stores import ObjectStore
from owdedup.runtime.wrapped.keying import CallKey

log = logging.getLogger("owdedup")

#: The one key a wrapper adds to a result: {"hit", "activation", "saved_ms" | "compute_ms"}.
METADATA_KEY = "owdedup"
#: Object references looked for in a recorded result, at most (a hit checks each exists).
MAX_CHECKED_REFERENCES = 100


def object_references(value: Any, depth: int = 0) -> Iterator[tuple[str, str]]:
    """Every (bucket, key) pair of text values found in dicts inside *value*."""
    if depth > 20:
        return
    if isinstance(value, dict):
        bucket, key = value.get("bucket"), value.get("key")
        if isinstance(bucket, str) and isinstance(key, str) and bucket and key:
            yield bucket, key
        for item in value.values():
            yield from object_references(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from object_references(item, depth + 1)


def find_result(call: CallKey, records: RecordStore, store: ObjectStore | None) -> Record | None:
    """The recorded result of *call*, believed only when its key fields are the call's and
    every object it names still exists; None (a miss) otherwise."""
    try:
        record = records.get(call.function_id, call.input_digest)
    except OwdedupError as exc:
        log.warning("record store unavailable, running %s: %s", call.function, exc)
        return None
    if record is None:
        return None
    problem = record.result_mismatch(call.function_id, call.input_digest)
    if problem is not None:
        log.warning("rejected the record for %s: %s; treating it as a miss", call.function,
                    problem)
        return None
    unchecked = _vanished_reference(record, store)
    if unchecked is not None:
        vanished, gone = unchecked
        log.warning("object %s named by the recorded result of %s has vanished or cannot be "
                    "checked; running it again", vanished, call.function)
        if not gone:  # a store that failed or is missing: the record may well be right
            return None
        try:
            records.delete(call.function_id, call.input_digest)
        except OwdedupError as exc:
            log.warning("could not delete the stale record: %s", exc)
        return None
    return record


def checking_store(context: Context, objects: bool) -> ObjectStore | None:
    """The store a recorded result's object references are checked in: the context's, also
    for a function with no declared object (its result may still name its outputs); None
    when it cannot be opened (such a result is then not believed)."""
    try:
        return context.store
    except OwdedupError as exc:
        if objects:
            raise
        log.warning("no object store to check recorded results with: %s", exc)
        return None


def _vanished_reference(record: Record, store: ObjectStore | None) -> tuple[str, bool] | None:
    """(an object the record names that is not known to exist, whether it is known to be
    gone), or None when all exist."""
    references = list(object_references(record.result))[:MAX_CHECKED_REFERENCES]
    if references and store is None:
        # nothing to check with: not believed
        return f"{references[0][0]}/{references[0][1]}", False
    for bucket, key in references:
        assert store is not None
        try:
            if not store.exists(bucket, key):
                return f"{bucket}/{key}", True
        except OwdedupError:
            return f"{bucket}/{key}", False  # cannot be checked: not believed
    return None


def record_result(call: CallKey, result: dict[str, Any], records: RecordStore, *,
                  compute_ms: float, activation: str) -> str | None:
    """Record *result* for *call*; None when recorded, else why not (logged, not raised:
    a result that could not be recorded is still the caller's result).

    A result over the limit raises ``BadInputError`` before anything is written."""
    record = Record.for_result(
        function=call.function, function_id=call.function_id, input_digest=call.input_digest,
        result=result, params=record_params(call), compute_ms=compute_ms,
        input_bytes=call.input_bytes, activation=activation,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    try:
        stored, _ = records.put(record)
        if stored.result_mismatch(call.function_id, call.input_digest) is not None:
            # A record that is not believable holds the id (the lookup rejected it).
            records.delete(call.function_id, call.input_digest)
            stored, _ = records.put(record)
            if stored.result_mismatch(call.function_id, call.input_digest) is not None:
                raise StoreError("a record that is not believable keeps taking its id")
    except OwdedupError as exc:
        log.warning("ran %s but could not record its result: %s", call.function, exc)
        return str(exc)
    return None


def replaced_object(call: CallKey, store: ObjectStore | None) -> str | None:
    """Why *call*'s result may not be recorded because an object it was keyed by no longer
    holds the hashed bytes (a new upload under the same name while the function ran: its
    result is of other content), or cannot be checked; None when every object is unchanged."""
    for name, digest in call.objects.items():
        bucket, _, key = name.partition("/")
        if store is None:
            return f"object {name} cannot be checked"
        try:
            current = store.content_sha256(bucket, key)[1]
        except OwdedupError as exc:
            return f"object {name} cannot be checked: {exc}"
        if current != digest:
            return f"object {name} was replaced while the function ran"
    return None


def record_params(call: CallKey) -> dict[str, Any]:
    """What a result record says of its call: the parameters' names (never their values) and
    the objects it was first computed on."""
    return {"parameters": list(call.param_names), "objects": dict(call.objects)}


def with_metadata(result: dict[str, Any], metadata: dict[str, Any],
                  enabled: bool) -> dict[str, Any]:
    """*result* (a copy) plus ``METADATA_KEY``; left as it is when *enabled* is false or the
    result already has a key of that name (the function's own value is never replaced)."""
    out = copy.deepcopy(result)
    if enabled and METADATA_KEY not in out:
        out[METADATA_KEY] = metadata
    return out


def hit_metadata(record: Record) -> dict[str, Any]:
    return {"hit": True, "activation": record.activation,
            "saved_ms": round(record.compute_ms, 3)}


def miss_metadata(activation: str, compute_ms: float, recorded: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"hit": False, "activation": activation,
                            "compute_ms": round(compute_ms, 3)}
    if recorded is not None:
        meta["record_error"] = recorded
    return meta
