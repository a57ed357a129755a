"""The four steps of the deduplicating sequence: hash -> lookup -> compute -> record.

Each step takes the job produced by the previous one and returns it completed; the action
files in ``actions/`` are thin wrappers around these functions. The steps are the same for
every registered function (``owdedup.runtime.functions``): the compute step of function
``NAME`` is deployed as the action ``NAME`` (``thumbnail``), in the sequence ``dedup-NAME``.
Only the compute step, on a miss, imports what the function computes with (Pillow).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from owdedup.runtime import env as env_names
from owdedup.runtime import handover, inflight
from owdedup.runtime.context import Context
from owdedup.runtime.counters import hit_saved_bytes
from owdedup.runtime.digest import canonical_json
from owdedup.runtime.errors import BadInputError, ConfigError, OwdedupError, StoreError
from owdedup.runtime.functions import DedupFunction, get_function
from owdedup.runtime.identity import identity_parts
from owdedup.runtime.job import Job, Output
from owdedup.runtime.records import OutputRef, Record

log = logging.getLogger("owdedup")


class RecordedRefusal(BadInputError):
    """A bad-input refusal answered from a negative record: the input was not read again."""

    recorded = True


class UnconfirmedRefusal(BadInputError):
    """A refusal of the object as it is now, which cannot be tied cheaply to the content
    hashed before (no checksum in the store): answered, never recorded as that content's."""


def hash_step(job: Job, ctx: Context) -> Job:
    """Name the input by its SHA-256: the store's own checksum if it has one, else streamed."""
    spec = get_function(job.function)
    job.params = spec.normalise(job.params).to_dict()  # bad parameters fail here, first
    info = ctx.store.head(job.bucket, job.key)
    if info.sha256 is None and handover.wanted(info.size):
        # In one process with 'thumbnail': hash the bytes and keep them for it.
        with ctx.store.open(job.bucket, job.key) as stream:
            data = stream.read()
        if len(data) != info.size:
            raise StoreError("object changed while it was being hashed", key=job.key)
        digest = hashlib.sha256(data).hexdigest()
        handover.keep(ctx.store, job.bucket, job.key, digest, data)
        job.digest, job.digest_source = digest, "computed"
        ctx.store.remember_sha256(info, digest)
    else:
        info, job.digest, job.digest_source = ctx.store.content_sha256(job.bucket, job.key, info)
    job.input_bytes = info.size
    return job


def lookup_step(job: Job, ctx: Context) -> Job:
    """Plan one output per variant and fill in those that an earlier run already made."""
    digest = _require_digest(job)
    if not job.dest_bucket:
        raise ConfigError("missing parameter 'dest_bucket' (the output bucket)", key=job.key)
    spec = get_function(job.function)
    variants = spec.variants(spec.normalise(job.params))
    job.outputs = [
        Output(v.size, v.function_id, job.dest_bucket, v.output_key(spec.name, digest))
        for v in variants
    ]
    try:
        found = ctx.records.get_many([(o.function_id, digest) for o in job.outputs])
    except OwdedupError as exc:
        # A record store that fails only costs a recomputation (and never the caller's work).
        log.warning("record store unavailable, computing %s: %s", job.name, exc)
        return job
    refusal = _recorded_refusal(job, spec, digest, found)
    if refusal is not None:
        ctx.counts.add(spec.name, refused=1)
        raise refusal
    saved_ms, output_bytes = _fill_found(job, ctx, digest, found)
    hit = job.all_hit
    ctx.counts.add(
        spec.name, hits=int(hit), misses=int(not hit),
        saved_ms=saved_ms if hit else 0.0,
        saved_bytes=hit_saved_bytes(job.input_bytes, output_bytes) if hit else 0,
    )
    return job


def compute_step(job: Job, ctx: Context) -> Job:
    """On a miss, make every variant of the job's function from one read of the input and
    write the missing ones.

    Identical work in flight runs once (``inflight``): the activation that claims the key
    computes, records and lets go; one that finds it claimed waits and comes back with the
    holder's result as a hit (``coalesced``), or computes if the holder failed or died."""
    if job.all_hit:
        return job  # nothing to compute: the function's libraries are never imported
    digest = _require_digest(job)
    if not job.outputs:
        raise ConfigError(f"no planned outputs: run 'lookup' before '{job.function}'",
                          key=job.key)
    spec = get_function(job.function)
    params = spec.normalise(job.params)
    data = handover.take(ctx.store, job.bucket, job.key, digest)  # read and hashed just now

    claimant = inflight.Claimant(ctx.records, inflight.owner_of(os.environ),
                                 inflight.deadline_of(os.environ))
    refusals: list[BadInputError] = []
    turn = claimant.take_turn(lease_key(job), digest,
                              lambda: _answered_by_records(job, ctx, spec, digest, refusals))
    if turn.polls or turn.took_over or turn.answered:  # else it claimed at once
        job.waited_ms, job.took_over = turn.waited_s * 1000, turn.took_over
    if turn.took_over:
        ctx.counts.add(spec.name, took_over=1)
    if turn.answered:
        if refusals:  # the holder found the input bad: so is ours, the same content
            ctx.counts.add(spec.name, refused=1)
            raise refusals[-1]
        job.coalesced = True
        ctx.counts.add(spec.name, coalesced=1,
                       saved_ms=sum(o.compute_ms for o in job.outputs))
        return job
    with claimant.holding(turn.lease):
        try:
            _compute(job, ctx, spec, params, digest, data)
        except BadInputError as exc:
            # Recorded before the lease goes, as a result would be (see _record_refusal).
            _record_refusal(job, ctx, spec, params, digest, exc)
            raise
        if turn.lease is not None:
            # Recorded before the lease goes: a waiter that finds it gone finds the record.
            _record_outputs(job, ctx, spec, params, digest)
    return job


def lease_key(job: Job) -> str:
    """The identity a job's lease is taken on: its one missing output's, or for several
    (the sizes of one request) one identity derived from them all."""
    missing = sorted({o.function_id for o in job.outputs if not o.hit})
    if len(missing) == 1:
        return missing[0]
    return hashlib.sha256(canonical_json(missing).encode("ascii")).hexdigest()


def _answered_by_records(job: Job, ctx: Context, spec: DedupFunction[Any], digest: str,
                         refusals: list[BadInputError]) -> bool:
    """Whether the records now answer the job: they hold every output it lacks (filled in),
    or a refusal of its input (appended to *refusals*)."""
    wanted = [(o.function_id, digest) for o in job.outputs if not o.hit]
    found = ctx.records.get_many(wanted)
    refusal = _recorded_refusal(job, spec, digest, found)
    if refusal is not None:
        refusals.append(refusal)
        return True
    rejected = job.rejected_records  # the lookup counted the records it did not believe
    _fill_found(job, ctx, digest, found)
    job.rejected_records = rejected
    return job.all_hit


def _recorded_refusal(job: Job, spec: DedupFunction[Any], digest: str,
                      found: dict[tuple[str, str], Record]) -> BadInputError | None:
    """The error a negative record of this job's input holds (see Record.failure), for this
    job's object; None if there is none to believe. Judged with other limits, or by another
    version of the function (another identity: not even found), the input is judged again."""
    judged = spec.normalise(job.params).to_dict()
    for output in job.outputs:
        record = found.get((output.function_id, digest))
        if record is None or record.failure is None:
            continue
        problem = record.failure_mismatch(output.function_id, digest, judged)
        if problem is not None:
            log.info("not answering %s with a recorded failure: %s", job.name, problem)
            continue
        return RecordedRefusal(str(record.failure["message"]), key=job.key)
    return None


def _record_refusal(job: Job, ctx: Context, spec: DedupFunction[Any], params: Any,
                    digest: str, exc: BadInputError) -> None:
    """Record that the function refused this input (a negative record per missing output),
    so that a re-run answers the same error without reading it. Only ``BadInputError``
    comes here: the input itself is bad, for this code and these parameters; a store that
    failed, a timeout or a lack of memory is never recorded. A failure to record is logged."""
    if isinstance(exc, RecordedRefusal | UnconfirmedRefusal):
        return
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        for output in job.outputs:
            if output.hit:
                continue
            ctx.records.put(dataclasses.replace(Record.for_failure(
                function=spec.name, function_id=output.function_id, input_digest=digest,
                message=message, judged=params.to_dict(), input_bytes=job.input_bytes,
                created=created, activation=os.environ.get(env_names.OW_ACTIVATION_ID, "")),
                identity=identity_parts(output.function_id)))
    except OwdedupError as record_error:
        log.warning("could not record the refusal of %s: %s", job.name, record_error)


def _compute(job: Job, ctx: Context, spec: DedupFunction[Any], params: Any,
             digest: str, data: bytes | None) -> None:
    # The function judges the input from a bounded prefix before its body is read: what it
    # would refuse costs only those bytes (or, handed over by 'hash', nothing more).
    if data is not None:
        in_hand = data
        spec.check_input(lambda length: in_hand[:length], len(in_hand), params, name=job.key)
    else:
        size = job.input_bytes or ctx.store.head(job.bucket, job.key).size
        try:
            spec.check_input(lambda length: ctx.store.read_prefix(job.bucket, job.key, length),
                             size, params, name=job.key)
        except BadInputError as refusal:
            # The prefix was read again: a refusal is of *digest* only if the object still
            # holds it, else a negative record would refuse the good content hashed before.
            # Confirmed from a HEAD only (the store's checksum, the size): streaming the whole
            # object here would undo what judging from a prefix saves on a huge bad input.
            now = ctx.store.head(job.bucket, job.key)
            if (now.sha256 is not None and now.sha256 != digest) or (
                    job.input_bytes and now.size != job.input_bytes):
                raise StoreError("object was replaced after it was hashed; retry",
                                 key=job.key) from None
            if now.sha256 is None:
                raise UnconfirmedRefusal(*refusal.args, key=job.key) from None
            raise
        data = ctx.store.read_bytes(job.bucket, job.key, max_bytes=size)
        if hashlib.sha256(data).hexdigest() != digest:
            # Computing now would record this output under another content's name.
            raise StoreError("object was replaced after it was hashed; retry", key=job.key)

    started = time.perf_counter()
    produced = spec.compute(data, params, name=job.key)
    job.compute_ms = (time.perf_counter() - started) * 1000
    labels = {v.function_id: v.label for v in spec.variants(params)}
    missing = [o for o in job.outputs if not o.hit]
    made = [produced.get(labels.get(o.function_id, "")) for o in missing]
    for output, content in zip(missing, made, strict=True):
        if content is None:  # a planned output this function did not make: write nothing
            raise ConfigError(f"{spec.name} made no output for the planned {output.key}",
                              key=job.key)
    share_ms = job.compute_ms / max(1, len(produced))
    # A write that fails part-way leaves no record, so nothing refers to what was written;
    # the names are fixed by (identity, digest), so the retry rewrites the same objects. They
    # are not deleted: a concurrent activation of the same content may already have recorded
    # those very objects.
    ctx.store.ensure_bucket(job.dest_bucket)
    for output, content in zip(missing, made, strict=True):
        assert content is not None  # checked above, before anything was written
        ctx.store.put(
            output.bucket, output.key, content.data,
            content_type=content.content_type,
            sha256=hashlib.sha256(content.data).hexdigest(),
        )
        output.bytes, output.width, output.height = (
            len(content.data), content.width, content.height)
        output.compute_ms = share_ms


def record_step(job: Job, ctx: Context) -> Job:
    """Store input -> output for every computed variant; report what the caller gets."""
    digest = _require_digest(job)
    if job.all_hit:
        job.status, job.recorded = "deduplicated", True
    elif not (job.status == "computed" and job.recorded):  # else the lease holder recorded
        spec = get_function(job.function)
        missing = [o for o in job.outputs if not o.hit and o.bytes == 0]
        if missing:
            raise ConfigError(f"outputs were not computed: run '{spec.name}' first",
                              key=job.key)
        _record_outputs(job, ctx, spec, spec.normalise(job.params), digest)
    if job.materialize:
        job.copies = _materialize(job, ctx)
    return job


def _record_outputs(job: Job, ctx: Context, spec: DedupFunction[Any], params: Any,
                    digest: str) -> None:
    """Write a record for every computed output; a failure is reported on the job (the
    outputs are made: the caller still gets them), never raised."""
    summaries = {v.function_id: v.summary for v in spec.variants(params)}
    job.status, job.recorded = "computed", True
    created = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        for output in job.outputs:
            if output.hit:
                continue
            record = Record(
                function=spec.name, function_id=output.function_id, input_digest=digest,
                output=OutputRef(output.bucket, output.key, output.bytes, output.width,
                                 output.height),
                params=dict(summaries.get(output.function_id, {})),
                compute_ms=output.compute_ms, input_bytes=job.input_bytes, created=created,
                identity=identity_parts(output.function_id),
            )
            stored, _ = ctx.records.put(record)
            if stored.mismatch(output.function_id, digest, output.key,
                               output.bucket) is not None:
                # A forged record holds this id (lookup rejected it): ours replaces it.
                ctx.records.delete(output.function_id, digest)
                stored, _ = ctx.records.put(record)
                if stored.mismatch(output.function_id, digest, output.key,
                                   output.bucket) is not None:
                    raise StoreError("a record that is not believable keeps taking its id")
            # A concurrent writer may have won: its record names the same object anyway.
            _fill_from_record(output, stored, hit=False)
    except OwdedupError as exc:
        log.warning("computed %s but could not record it: %s", job.name, exc)
        job.recorded, job.record_error = False, str(exc)


def _materialize(job: Job, ctx: Context) -> list[dict[str, object]]:
    """Server-side copies named after the input, for users who want one output per name."""
    stem = materialized_stem(job.key)
    spec = get_function(job.function)
    variants = {v.function_id: v for v in spec.variants(spec.normalise(job.params))}
    copies = []
    for output in job.outputs:
        variant = variants.get(output.function_id)
        if variant is None:
            raise ConfigError(f"output {output.key} is no variant of {spec.name}", key=job.key)
        target = f"{stem}_{variant.label}{variant.extension}"
        ctx.store.copy(output.bucket, output.key, job.dest_bucket, target)
        copies.append({"bucket": job.dest_bucket, "key": target, "size": output.size})
    return copies


def materialized_stem(key: str) -> str:
    """The name of *key*'s materialized copies before ``_<size>.<ext>``: the key without
    its extension, so ``a``, ``a.jpg`` and ``a.png`` share one (``map`` refuses the later
    ones)."""
    folder, _, name = key.rpartition("/")
    return f"{folder}/" * bool(folder) + (name.rsplit(".", 1)[0] if "." in name else name)


def _fill_found(job: Job, ctx: Context, digest: str,
                found: dict[tuple[str, str], Record]) -> tuple[float, list[int]]:
    """Fill the job's outputs that a believable record in *found* answers (its output still
    there); (compute time and output sizes those records saved)."""
    saved_ms, output_bytes = 0.0, []
    for output in job.outputs:
        if output.hit:
            continue
        record = found.get((output.function_id, digest))
        if record is None or _rejected(job, record, output, digest):
            continue
        if not ctx.store.exists(record.output.bucket, record.output.key):
            log.warning("output %s/%s of a record has vanished; recomputing",
                        record.output.bucket, record.output.key)
            try:
                ctx.records.delete(output.function_id, digest)
            except OwdedupError as exc:  # the recomputation will write the same names again
                log.warning("could not delete the stale record: %s", exc)
            continue
        _fill_from_record(output, record)
        saved_ms += record.compute_ms
        output_bytes.append(record.output.bytes)
    return saved_ms, output_bytes


def _rejected(job: Job, record: Record, output: Output, digest: str) -> bool:
    """True (counted on the job and logged) when *record* is not believable for *output*."""
    problem = record.mismatch(output.function_id, digest, output.key, output.bucket)
    if problem is None:
        return False
    job.rejected_records += 1
    log.warning("rejected the record for %s (size %d): %s; treating it as a miss",
                job.name, output.size, problem)
    return True


def _fill_from_record(output: Output, record: Record, *, hit: bool = True) -> None:
    output.hit = hit
    output.bucket, output.key = record.output.bucket, record.output.key
    output.bytes, output.width, output.height = (
        record.output.bytes, record.output.width, record.output.height)
    output.compute_ms = record.compute_ms


def _require_digest(job: Job) -> str:
    if job.digest is None:
        raise ConfigError("no input digest: run 'hash' before this step", key=job.key)
    return job.digest

