"""Fan a function out over every object under a prefix, in parallel processes.

Identical contents inside one run are computed once whatever the number of workers: each
object is hashed first (the ``hash`` action); the first object of each digest (the first to
claim it) then runs the rest of the sequence in the same worker, on the bytes that worker has
just read; the other objects with that digest share its result.

Each worker process holds its own engine (see ``workers`` and ``workpool``); a worker that
dies fails only the object it held, and is replaced.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.counters import hit_saved_bytes
from owdedup.runtime.wrapped.results import METADATA_KEY
from owdedup.workpool import WorkerDied, WorkerPool

COMPUTED, DEDUPLICATED, FAILED = "computed", "deduplicated", "failed"


@dataclass
class ObjectResult:
    key: str
    status: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    ms: float = 0.0
    saved_ms: float = 0.0  # compute time not spent because of deduplication
    digest: str | None = None
    input_bytes: int = 0
    record_error: str | None = None  # computed, but the record store did not keep it
    #: Failed with a refusal answered from a negative record (the input was not read again).
    recorded_failure: bool = False
    #: Deduplicated by waiting for an identical computation in flight (a lease's holder).
    coalesced: bool = False
    #: A wrapped action's result (``map CONDUCTOR --platform openwhisk``): its outputs are
    #: whatever the action returns, not files this run names.
    result: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"key": self.key, "status": self.status,
                                 "outputs": self.outputs, "error": self.error,
                                 "ms": round(self.ms, 3)}
        if self.record_error is not None:
            entry["record_error"] = self.record_error
        if self.recorded_failure:
            entry["recorded_failure"] = True
        if self.coalesced:
            entry["coalesced"] = True
        if self.result is not None:
            entry["result"] = self.result
        return entry


@dataclass
class MapSummary:
    results: list[ObjectResult]
    wall_s: float

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def recorded_failures(self) -> int:
        """Failures answered from negative records: known bad inputs, not read again."""
        return sum(1 for r in self.results if r.recorded_failure)

    @property
    def coalesced(self) -> int:
        return sum(1 for r in self.results if r.coalesced)

    @property
    def failed(self) -> list[ObjectResult]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def not_recorded(self) -> list[ObjectResult]:
        """Computed, but their records were not written: the next run computes them again."""
        return [r for r in self.results if r.record_error is not None]

    @property
    def saved_ms(self) -> float:
        return sum(r.saved_ms for r in self.results)

    @property
    def compute_ms(self) -> float:
        return sum(float(o.get("compute_ms", 0.0)) for r in self.results if r.status == COMPUTED
                   for o in r.outputs if not o.get("hit")) + sum(
            _wrapped_compute_ms(r.result) for r in self.results
            if r.status == COMPUTED and r.result is not None)


def _wrapped_compute_ms(result: Mapping[str, Any]) -> float:
    """A wrapped action's compute time, as its conductor's metadata says it."""
    meta = result.get(METADATA_KEY)
    if not isinstance(meta, dict) or meta.get("hit"):
        return 0.0
    value = meta.get("compute_ms")
    return float(value) if isinstance(value, int | float) else 0.0


@dataclass(frozen=True)
class MapRequest:
    function: str
    sequence: str  # fully qualified, e.g. "owdedup/dedup-thumbnail"
    hash_action: str  # fully qualified, e.g. "owdedup/hash"
    src_bucket: str
    dest_bucket: str
    params: dict[str, Any]  # function parameters added to every invocation
    manifest: Path | None = None
    env: Mapping[str, str] | None = None  # environment the manifest's $VARs are bound from


# -- coordinator ------------------------------------------------------------------------------

def run_map(
    request: MapRequest,
    keys: list[str],
    *,
    workers: int,
    on_result: Callable[[ObjectResult], None] | None = None,
    on_hashed: Callable[[str], None] | None = None,
    failed: Mapping[str, str] | None = None,
    pool: WorkerPool | None = None,
    sizes: Mapping[str, int] | None = None,
) -> MapSummary:
    """Hash every object; the first object of each digest runs the rest of the sequence.

    A worker hashes an object and, if no other worker has claimed that digest in this run,
    goes straight on with the sequence after ``hash`` (``Engine.resume``), on the bytes it has
    just read (``workers.process``); the later objects of that digest share its result.
    *failed* (key -> reason) are objects that fail before any work (a name that would
    collide, say): they are reported in key order with the others. *pool*: workers started
    beforehand (the CLI starts them before its progress bar's thread), else the run starts
    and stops its own. *sizes* (key -> bytes, from the listing): objects are handed out
    largest first, so that the last ones to run are the shortest and no worker idles long
    while another finishes a big one (by simulation from 36 photos' times on 2 workers, the
    idle end was 2 % of the run in key order, 0.1 % largest first; for 18 photos, 6 % and
    0.4 %). Equal sizes keep key order.
    """
    started = time.perf_counter()
    run = _Run(on_result, on_hashed)
    for key, reason in (failed or {}).items():
        run.settle(ObjectResult(key, FAILED, error=f"{key}: {reason}"))
    handed_out = keys if sizes is None else sorted(keys, key=lambda k: -sizes.get(k, 0))
    pending = deque(key for key in handed_out if key not in run.results)
    with contextlib.ExitStack() as stack:
        claims = stack.enter_context(tempfile.TemporaryDirectory(prefix="owdedup-map-"))
        if pool is None:
            pool = stack.enter_context(WorkerPool(workers, request.manifest, request.env))
        while pending or pool.busy:
            while pending and pool.free(len(pending)):
                key = pending.popleft()
                pool.start(key, ("process", request.hash_action, request.sequence,
                                 _payload(request, key), claims))
            for tag, answer in pool.wait():
                run.answer(str(tag), answer)
    run.orphans()
    ordered = [run.results[key] for key in keys]
    _count_in_run_duplicates(request, ordered, run.groups)
    return MapSummary(ordered, time.perf_counter() - started)


def _payload(request: MapRequest, key: str) -> dict[str, Any]:
    return {**request.params, "bucket": request.src_bucket, "key": key,
            "dest_bucket": request.dest_bucket, "function": request.function}


class _Run:
    """The coordinator's bookkeeping: which object computes each digest, who shares it."""

    def __init__(self, on_result: Callable[[ObjectResult], None] | None,
                 on_hashed: Callable[[str], None] | None) -> None:
        self.on_result, self.on_hashed = on_result, on_hashed
        self.results: dict[str, ObjectResult] = {}
        self.hashed: dict[str, Hashed] = {}
        self.claimed: dict[str, str] = {}  # key -> the digest it computes
        self.groups: dict[str, list[str]] = {}  # digest -> keys, the computing one first
        self.waiting: dict[str, list[str]] = {}  # digest -> duplicates without a result yet
        self.outcome: dict[str, tuple[dict[str, Any], bool, float]] = {}  # digest -> result

    def settle(self, entry: ObjectResult) -> None:
        self.results[entry.key] = entry
        if self.on_result is not None:
            self.on_result(entry)

    def answer(self, key: str, answer: Any) -> None:
        if isinstance(answer, WorkerDied):
            self._died(key, answer.reason)
            return
        if answer[0] == "note":  # ("note", "claimed", digest): this object computes it
            digest = answer[2]
            self.claimed[key] = digest
            self.groups.setdefault(digest, []).insert(0, key)
            return
        kind, hash_result, hash_ms, *rest = answer
        self.hashed[key] = Hashed(hash_ms, int(hash_result.get("input_bytes", 0)))
        if self.on_hashed is not None:
            self.on_hashed(key)
        if kind == "failed":
            self.settle(ObjectResult(key, FAILED, error=_error_text(hash_result), ms=hash_ms))
        elif kind == "duplicate":
            digest = hash_result["digest"]
            self.groups.setdefault(digest, []).append(key)
            if digest in self.outcome:
                self._share(key, digest, *self.outcome[digest])
            else:
                self.waiting.setdefault(digest, []).append(key)
        else:
            self._computed(self.claimed[key], *rest)

    def _computed(self, digest: str, result: dict[str, Any], ok: bool, ms: float) -> None:
        self.outcome[digest] = (result, ok, ms)
        self._share(self.groups[digest][0], digest, result, ok, ms)
        for key in self.waiting.pop(digest, []):
            self._share(key, digest, result, ok, ms)

    def _share(self, key: str, digest: str, result: dict[str, Any], ok: bool,
               ms: float) -> None:
        first = self.groups[digest][0] == key
        hashed = self.hashed.get(key, Hashed(0.0, 0))
        self.settle(object_result(key, digest, result, ok, ms if first else 0.0, hashed,
                                   not first))

    def _died(self, key: str, reason: str) -> None:
        error = {"error": f"{key}: {reason} while processing it"}
        if key in self.claimed:  # the others of its content must not wait for it
            self._computed(self.claimed[key], error, False, 0.0)
        else:
            self.settle(ObjectResult(key, FAILED, error=error["error"]))

    def orphans(self) -> None:
        """Duplicates of a content whose computing object ended without a word (its worker
        died between claiming and saying so): failed, never left out."""
        for digest, keys in self.waiting.items():
            for key in keys:
                self.settle(ObjectResult(
                    key, FAILED, digest=digest,
                    error=f"{key}: the object with the same content ended without a result"))
        self.waiting.clear()


def _count_in_run_duplicates(
    request: MapRequest, results: list[ObjectResult], groups: dict[str, list[str]]
) -> None:
    """Duplicates settled inside the run never reached ``lookup``: count them as hits too."""
    duplicates = [r for r in results if r.status == DEDUPLICATED and r.digest is not None
                  and groups[r.digest][0] != r.key]
    if not duplicates:
        return
    context = Context(Settings.resolve({}, request.env))
    try:
        # Buffered as lookup's counts are: written at close, and a failure only warns.
        context.counts.add(
            request.function, hits=len(duplicates),
            saved_ms=sum(r.saved_ms for r in duplicates),
            saved_bytes=sum(hit_saved_bytes(r.input_bytes, (o.get("bytes", 0) for o in r.outputs))
                            for r in duplicates),
        )
    finally:
        context.close()


@dataclass(frozen=True)
class Hashed:
    """What hashing one object cost (also used by ``map --platform openwhisk``)."""

    ms: float
    input_bytes: int


def object_result(
    key: str, digest: str, result: dict[str, Any], ok: bool, ms: float, hashed: Hashed,
    duplicate_in_run: bool,
) -> ObjectResult:
    """One object's entry from the sequence's *result* for its content (also used by
    ``map --platform openwhisk``); refuses outputs computed for another digest."""
    total_ms = ms + hashed.ms
    if not ok:
        return ObjectResult(key, FAILED, error=_error_text(result, key), ms=total_ms,
                            digest=digest, recorded_failure=result.get("recorded_failure") is True)
    computed_for = result.get("digest")
    if computed_for is not None and computed_for != digest:
        # The representative was replaced between its hash here and its run: these outputs
        # are another content's, wrong for every object of the group (a re-run redoes them).
        return ObjectResult(key, FAILED, ms=total_ms, digest=digest, error=(
            f"{key}: {result.get('key', 'its representative')} changed after it was hashed; "
            "the outputs made are another content's, re-run to process it"))
    outputs = [
        {"bucket": o["bucket"], "key": o["key"], "size": o["size"], "bytes": o["bytes"],
         "hit": o["hit"] or duplicate_in_run, "compute_ms": o["compute_ms"]}
        for o in result.get("outputs", [])
    ]
    deduplicated = duplicate_in_run or result.get("status") == DEDUPLICATED
    saved = sum(o["compute_ms"] for o in outputs) if deduplicated else 0.0
    record_error = None
    if result.get("recorded") is False and not duplicate_in_run:
        record_error = str(result.get("record_error") or "the record store failed")
    return ObjectResult(key, DEDUPLICATED if deduplicated else COMPUTED, outputs,
                        ms=total_ms, saved_ms=saved, digest=digest,
                        input_bytes=hashed.input_bytes, record_error=record_error,
                        coalesced=result.get("coalesced") is True)


def _error_text(result: dict[str, Any], key: str | None = None) -> str:
    error = result.get("error", "unknown error")
    text = error if isinstance(error, str) else str(error)
    if key and not text.startswith(key):
        # The representative's error names the representative; say which object this is.
        text = f"{key}: {text.split(': ', 1)[-1]}"
    return text

