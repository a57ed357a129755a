"""``owdedup explain SRC_BUCKET/KEY --function CONDUCTOR``: why a call of a wrapped action
(a conductor made by ``owdedup wrap``) would hit, wait or miss.

The call is keyed exactly as the conductor's first activation keys it
(:class:`~owdedup.openwhisk.wrapped_map.WrappedTarget`: its bound configuration, the wrapped
action's version fingerprint read through the REST API, the objects' digests). A wrapped
call's identity is one hash of that version, the object references and every parameter value
not declared as ignored; the values are never kept (one may be a credential), so a miss is
broken down only into what a record keeps: the version fingerprint and the parameters'
names. When those agree, what differs is a parameter's value, and the explanation says so
rather than guess which. Wrapped calls record no refusals (an error is never recorded).

Nothing is written.
"""

from __future__ import annotations

import time
from typing import Any

from owdedup.explain import closing_lines
from owdedup.openwhisk.wrapped_map import WrappedTarget
from owdedup.runtime.context import Context
from owdedup.runtime.records import Record
from owdedup.runtime.wrapped.keying import CallKey

#: What a wrapped call's explanation cannot break down, and why.
NOT_KEPT = ("parameter values (hashed into the identity, never stored: one may be a "
            "credential)", "the parts of the action's version (code, image, bound "
            "parameters): one fingerprint")


def explain_wrapped(target: WrappedTarget, ctx: Context, bucket: str, key: str,
                    extra: dict[str, Any]) -> dict[str, Any]:
    """The explanation of one call of *target* on BUCKET/KEY with the parameters *extra*."""
    target.check_params(extra)
    params = target.call_params(key, bucket, None, extra)
    call = target.key(params, target.fingerprint(), ctx)
    record = ctx.records.get(call.function_id, call.input_digest)
    lease = ctx.records.get_lease(call.function_id, call.input_digest)
    state = _judge(record, call)
    live = lease is not None and lease.expires_at > time.time()
    verdict = ("hit" if state == "found" else "waits for work in flight" if live else "miss")
    others = [] if verdict == "hit" else [
        {"identity": other.function_id, "activation": other.activation,
         "created": other.created, "differs": differences(other, call)}
        for other in ctx.records.records_of_digest(call.input_digest)
        if other.function_id != call.function_id and other.function == call.function]
    return {
        "kind": "wrapped", "object": f"{bucket}/{key}", "conductor": target.conductor,
        "action": target.config.action, "function": call.function,
        "digest": call.input_digest, "objects": dict(call.objects),
        "input_bytes": call.input_bytes, "identity": call.function_id,
        "parts": {"version": call.version, "objects": [str(o) for o in target.config.objects],
                  "parameters": list(call.param_names),
                  "ignored": sorted(target.config.ignore)},
        "not_broken_down": list(NOT_KEPT), "record": state,
        "negative": "never: a wrapped call's error is not recorded",
        "verdict": verdict,
        "lease": None if lease is None else {
            "owner": lease.owner, "expires_in_s": round(lease.expires_at - time.time(), 1)},
        "other_identities": others,
    }


def _judge(record: Record | None, call: CallKey) -> str:
    if record is None:
        return "none"
    problem = record.result_mismatch(call.function_id, call.input_digest)
    return "found" if problem is None else f"not believed: {problem}"


def differences(theirs: Record, call: CallKey) -> list[str]:
    """What differs between the call a record was made for and *call*, as far as the record
    keeps it: the version fingerprint, the parameters' names; else a parameter's value."""
    found: list[str] = []
    version = theirs.params.get("version")
    if not version:
        found.append("its action version was not recorded (written before explain covered "
                     "wrapped calls)")
    elif version != call.version:
        found.append(f"wrapped action version {str(version)[:12]} → {call.version[:12]} "
                     "(its code, image, main or a bound parameter changed)")
    before = {str(name) for name in theirs.params.get("parameters") or []}
    now = set(call.param_names)
    found += [f"parameter {name} given (not before)" for name in sorted(now - before)]
    found += [f"parameter {name} no longer given" for name in sorted(before - now)]
    if not found:
        found.append("same action version and parameter names: a parameter's value differs "
                     "(values are never kept, so which one cannot be told)")
    return found


def as_text(explained: dict[str, Any]) -> str:
    """The explanation for a person."""
    parts = explained["parts"]
    lines = [
        f"{explained['object']}: {explained['verdict']}",
        "  content  " + ", ".join(f"{name} sha256 {digest}"
                                  for name, digest in explained["objects"].items())
        + f" ({explained['input_bytes']} bytes)",
        f"  wrapped  {explained['conductor']} → {explained['action']}: identity "
        f"{explained['identity'][:16]}... (action version {parts['version'][:12]}, objects "
        f"{', '.join(parts['objects']) or 'none'}, parameters "
        f"{', '.join(parts['parameters']) or 'none'}; ignored "
        f"{', '.join(parts['ignored']) or 'none'}): record {explained['record']}",
        "  not broken down: " + "; ".join(explained["not_broken_down"]),
    ]
    lines += closing_lines(explained, f"for {explained['function']}")
    return "\n".join(lines)
