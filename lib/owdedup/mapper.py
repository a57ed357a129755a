"""Fan a function out over every object under a prefix, in parallel processes.

Two phases, so that identical contents inside one run are computed once whatever the number
of workers: first every object is hashed (the ``hash`` action), then the whole sequence runs
once per distinct digest; the other objects with that digest share its result.

Each worker process holds its own engine (see ``workers``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.counters import hit_saved_bytes
from owdedup.workers import invoke
from owdedup.workers import pool as workers_pool

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

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "status": self.status, "outputs": self.outputs,
                "error": self.error, "ms": round(self.ms, 3)}


@dataclass
class MapSummary:
    results: list[ObjectResult]
    wall_s: float

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> list[ObjectResult]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def saved_ms(self) -> float:
        return sum(r.saved_ms for r in self.results)

    @property
    def compute_ms(self) -> float:
        return sum(float(o.get("compute_ms", 0.0)) for r in self.results if r.status == COMPUTED
                   for o in r.outputs if not o.get("hit"))


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
) -> MapSummary:
    started = time.perf_counter()
    results: dict[str, ObjectResult] = {}
    with workers_pool(workers, request.manifest, request.env) as pool:
        groups, hashed = _hash_all(pool, request, keys, results, on_hashed)
        for key in keys:
            if key in results and on_result is not None:
                on_result(results[key])  # failed while hashing
        futures: dict[Future[tuple[dict[str, Any], bool, float]], str] = {}
        for digest, members in groups.items():
            payload = {**request.params, "bucket": request.src_bucket, "key": members[0],
                       "dest_bucket": request.dest_bucket, "function": request.function}
            futures[pool.submit(invoke, request.sequence, payload)] = digest
        for future in as_completed(futures):
            digest = futures[future]
            result, ok, ms = future.result()
            for index, key in enumerate(groups[digest]):
                entry = _object_result(key, digest, result, ok,
                                       ms if index == 0 else 0.0, hashed[key], index > 0)
                results[key] = entry
                if on_result is not None:
                    on_result(entry)
    ordered = [results[key] for key in keys]
    _count_in_run_duplicates(request, ordered, groups)
    return MapSummary(ordered, time.perf_counter() - started)


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
class _Hashed:
    ms: float
    input_bytes: int


def _hash_all(
    pool: ProcessPoolExecutor,
    request: MapRequest,
    keys: list[str],
    results: dict[str, ObjectResult],
    on_hashed: Callable[[str], None] | None,
) -> tuple[dict[str, list[str]], dict[str, _Hashed]]:
    """Phase one: digest of every object; failures are final results already."""
    futures = {
        pool.submit(invoke, request.hash_action,
                    {**request.params, "bucket": request.src_bucket, "key": key,
                     "dest_bucket": request.dest_bucket, "function": request.function}): key
        for key in keys
    }
    digests: dict[str, str] = {}
    hashed: dict[str, _Hashed] = {}
    for future in as_completed(futures):
        key = futures[future]
        result, ok, ms = future.result()
        hashed[key] = _Hashed(ms, int(result.get("input_bytes", 0)))
        if ok:
            digests[key] = result["digest"]
        else:
            results[key] = ObjectResult(key, FAILED, error=_error_text(result), ms=ms)
        if on_hashed is not None:
            on_hashed(key)
    groups: dict[str, list[str]] = {}
    for key in keys:  # key order: the first name of a content is its representative
        if key in digests:
            groups.setdefault(digests[key], []).append(key)
    return groups, hashed


def _object_result(
    key: str, digest: str, result: dict[str, Any], ok: bool, ms: float, hashed: _Hashed,
    duplicate_in_run: bool,
) -> ObjectResult:
    total_ms = ms + hashed.ms
    if not ok:
        return ObjectResult(key, FAILED, error=_error_text(result, key), ms=total_ms,
                            digest=digest)
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
    return ObjectResult(key, DEDUPLICATED if deduplicated else COMPUTED, outputs,
                        ms=total_ms, saved_ms=saved, digest=digest,
                        input_bytes=hashed.input_bytes)


def _error_text(result: dict[str, Any], key: str | None = None) -> str:
    error = result.get("error", "unknown error")
    text = error if isinstance(error, str) else str(error)
    if key and not text.startswith(key):
        # The representative's error names the representative; say which object this is.
        text = f"{key}: {text.split(': ', 1)[-1]}"
    return text

