"""``owdedup explain SRC_BUCKET/KEY``: why a run of one object would hit, wait or miss.

What a lookup decides from, laid out: the input's digest and where it came from (the store's
checksum, or streamed), each variant's function identity and the parts it is computed from
(code digest, library versions, normalised parameters), whether a record, a lease (work in
flight) or a negative record (a known bad input) exists for it, and, on a miss, the records
that exist for the same content under other identities with the part that differs
("quality 85 → 90", "code of thumbnail changed", "Pillow 12.0 → 13.0").

Nothing is written: no counter, no record, no lease (the folder store may cache a digest it
had to compute, as any run does).
"""

from __future__ import annotations

import time
from typing import Any

from owdedup.runtime.context import Context
from owdedup.runtime.functions import get_function
from owdedup.runtime.identity import identity_parts
from owdedup.runtime.job import Job, Output
from owdedup.runtime.pipeline import hash_step, lease_key
from owdedup.runtime.records import Record


def explain(ctx: Context, bucket: str, key: str, function: str,
            params: dict[str, Any]) -> dict[str, Any]:
    """The explanation of one object, as data (``--json`` prints it as it is)."""
    spec = get_function(function)
    job = hash_step(Job(bucket, key, function=spec.name, params=dict(params)), ctx)
    digest = str(job.digest)
    normalised = spec.normalise(job.params)
    variants = spec.variants(normalised)
    job.outputs = [Output(v.size, v.function_id, "", v.output_key(spec.name, digest))
                   for v in variants]
    found = ctx.records.get_many([(v.function_id, digest) for v in variants])
    lease = ctx.records.get_lease(lease_key(job), digest)
    rows = []
    for variant in variants:
        record = found.get((variant.function_id, digest))
        row: dict[str, Any] = {"variant": variant.label, "identity": variant.function_id,
                               "parts": identity_parts(variant.function_id),
                               "record": _judge(record, variant.function_id, digest,
                                                variant.output_key(spec.name, digest),
                                                normalised.to_dict())}
        if record is not None and record.failure is not None:
            row["refusal"] = record.failure.get("message")
        rows.append(row)
    states = {row["record"] for row in rows}
    verdict = ("refused" if "negative" in states else "hit" if states == {"found"}
               else "waits for work in flight" if lease is not None
               and lease.expires_at > time.time() else "miss")
    ours = {row["identity"] for row in rows}
    others = [] if verdict == "hit" else [
        {"identity": other.function_id, "function": other.function,
         "kind": "negative" if other.failure is not None else "output",
         "differs": _nearest(other.identity, [row["parts"] for row in rows])}
        for other in ctx.records.records_of_digest(digest)
        if other.function_id not in ours]
    return {
        "object": f"{bucket}/{key}", "digest": digest, "digest_source": job.digest_source,
        "input_bytes": job.input_bytes, "function": spec.name,
        "params": normalised.to_dict(), "verdict": verdict, "variants": rows,
        "lease": None if lease is None else {
            "owner": lease.owner, "expires_in_s": round(lease.expires_at - time.time(), 1)},
        "other_identities": others,
    }


def _judge(record: Record | None, function_id: str, digest: str, output_key: str,
           judged: dict[str, Any]) -> str:
    if record is None:
        return "none"
    if record.failure is not None:
        problem = record.failure_mismatch(function_id, digest, judged)
        return "negative" if problem is None else f"negative, not believed: {problem}"
    problem = record.mismatch(function_id, digest, output_key)
    return "found" if problem is None else f"not believed: {problem}"


def _nearest(theirs: dict[str, Any] | None, ours: list[dict[str, Any] | None]) -> list[str]:
    """What differs between a record's identity parts and the nearest of ours."""
    if theirs is None:
        return ["its identity parts were not recorded (written before owdedup explain)"]
    candidates = [differences(theirs, mine) for mine in ours if mine is not None]
    return min(candidates, key=len) if candidates else ["our identity parts are unknown"]


def differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """Each part of identity *ours* that is not *theirs*, as "what: theirs → ours"."""
    found: list[str] = []
    if theirs.get("schema") != ours.get("schema"):
        found.append(f"identity schema {theirs.get('schema')} → {ours.get('schema')}")
    if theirs.get("function") != ours.get("function"):
        found.append(f"function {theirs.get('function')} → {ours.get('function')}")
    if theirs.get("code") != ours.get("code"):
        found.append(f"code of {ours.get('function')} changed "
                     f"({str(theirs.get('code'))[:12]} → {str(ours.get('code'))[:12]})")
    for kind in ("libraries", "params"):
        old, new = theirs.get(kind) or {}, ours.get(kind) or {}
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                found.append(f"{name} {_shown(old.get(name))} → {_shown(new.get(name))}")
    return found


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def as_text(explained: dict[str, Any]) -> str:
    """The explanation for a person."""
    lines = [
        f"{explained['object']}: {explained['verdict']}",
        f"  content  sha256 {explained['digest']} ({explained['digest_source']}, "
        f"{explained['input_bytes']} bytes)",
        f"  function {explained['function']} {explained['params']}",
    ]
    for row in explained["variants"]:
        parts = row["parts"] or {}
        libraries = ", ".join(f"{k} {v}" for k, v in (parts.get("libraries") or {}).items())
        lines.append(f"  variant {row['variant']}: identity {row['identity'][:16]}... "
                     f"(code {str(parts.get('code'))[:12]}, {libraries or 'no libraries'}, "
                     f"params {parts.get('params')}): record {row['record']}")
        if row.get("refusal"):
            lines.append(f"    refused before: {row['refusal']}")
    lines += closing_lines(explained, "under any identity")
    return "\n".join(lines)


def closing_lines(explained: dict[str, Any], scope: str) -> list[str]:
    """How both explanations end (also ``explain_wrapped``): the lease of work in flight,
    the records of the same content under other identities (each of a *kind* when it says
    one) and what differs, and, on a miss none of them explains, that the content is new
    (*scope*: where no record was found)."""
    lines = []
    lease = explained["lease"]
    if lease is not None:
        lines.append(f"  in flight: held by {lease['owner']}, expires in "
                     f"{lease['expires_in_s']} s")
    for other in explained["other_identities"]:
        kind = f"{other['kind']} " if other.get("kind") else ""
        lines.append(f"  other {kind}record of this content, identity "
                     f"{other['identity'][:16]}...: " + "; ".join(other["differs"]))
    if explained["verdict"] == "miss" and not explained["other_identities"]:
        lines.append(f"  no record of this content {scope}: new content")
    return lines
