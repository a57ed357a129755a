"""``owdedup map --platform openwhisk``: the client hashes and looks up, OpenWhisk computes.

1. Every object is hashed here, in threads (a checksum HEAD where the store keeps one, a
   streamed hash otherwise): the same :func:`~owdedup.runtime.pipeline.hash_step` the
   ``hash`` action runs.
2. Identical contents are folded together, and each distinct one is looked up with the
   ``lookup`` step's own code: work already done is answered here and **never invoked**.
3. The deployed sequence is invoked once per distinct missing content through
   :class:`~owdedup.openwhisk.fanout.FanOut`, as fast as the namespace allows; the other
   objects with that content share its result.

The results have the shape of the local ``map``'s (:class:`~owdedup.mapper.ObjectResult`),
plus what the platform cost: :class:`PlatformReport`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from owdedup.mapper import (
    DEDUPLICATED,
    FAILED,
    Hashed,
    MapRequest,
    MapSummary,
    ObjectResult,
    object_result,
)
from owdedup.openwhisk.fanout import ABANDONED, INTERRUPTED, FanOut, FanOutStats, Outcome, Task
from owdedup.openwhisk.fanout import FAILED as TASK_FAILED
from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.errors import OwdedupError
from owdedup.runtime.job import Job
from owdedup.runtime.pipeline import hash_step, lookup_step


@dataclass(frozen=True)
class PlatformReport:
    fanout: FanOutStats
    saved_invocations: int  # objects settled without invoking anything


class ThreadContexts:
    """One :class:`Context` per thread of the client's pool (a SQLite connection belongs to
    the thread that opened it), all closed at the end of a run."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._local = threading.local()
        self._opened: list[Context] = []
        self._lock = threading.Lock()

    def get(self) -> Context:
        if not hasattr(self._local, "context"):
            self._local.context = Context(self._settings)
            with self._lock:
                self._opened.append(self._local.context)
        found: Context = self._local.context
        return found

    def close(self) -> None:
        for opened in self._opened:
            opened.close()


def run_platform_map(
    request: MapRequest,
    keys: list[str],
    fanout: FanOut,
    *,
    threads: int = 16,
    on_hashed: Callable[[str], None] | None = None,
    on_result: Callable[[ObjectResult], None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[MapSummary, PlatformReport]:
    settle = Settled(on_result)
    contexts = ThreadContexts(Settings.resolve({}, request.env))
    context = contexts.get

    def hashed(key: str) -> Job | ObjectResult:
        if stop is not None and stop.is_set():
            # Ctrl-C during the hashing: the rest is neither hashed nor looked up (a bucket of
            # a million objects would otherwise be read to the end before the run stops).
            return interrupted(key, INTERRUPTED)
        job = Job(request.src_bucket, key, request.dest_bucket, request.function,
                  {k: v for k, v in request.params.items()
                   if k not in ("materialize", "retry_failed")},
                  retry_failed=request.params.get("retry_failed") is True)
        started_at = time.perf_counter()
        try:
            job = hash_step(job, context())
        except OwdedupError as exc:
            return ObjectResult(key, FAILED, error=named(key, str(exc)),
                                ms=(time.perf_counter() - started_at) * 1000)
        finally:
            if on_hashed is not None:
                on_hashed(key)
        return job

    def looked_up(job: Job) -> Job | ObjectResult:
        try:
            return lookup_step(job, context())
        except OwdedupError as exc:  # a known bad input among them (a negative record)
            return ObjectResult(job.key, FAILED, error=named(job.key, str(exc)),
                                recorded_failure=getattr(exc, "recorded", False) is True)

    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            jobs: dict[str, Job] = {}
            for item in pool.map(hashed, keys):
                if isinstance(item, ObjectResult):
                    settle(item)
                else:
                    jobs[item.key] = item
            groups: dict[str, list[str]] = {}
            for key in keys:  # key order: the first name of a content is its representative
                if key in jobs and jobs[key].digest is not None:
                    groups.setdefault(str(jobs[key].digest), []).append(key)
            representatives = [jobs[members[0]] for members in groups.values()]
            planned: dict[str, Job] = {}
            for item in pool.map(looked_up, representatives):
                if isinstance(item, ObjectResult):
                    for key in groups[str(jobs[item.key].digest)]:
                        settle(ObjectResult(key, FAILED, error=named(key, item.error or ""),
                                            recorded_failure=item.recorded_failure))
                    continue
                planned[str(item.digest)] = item
    finally:
        contexts.close()

    saved = 0
    tasks: list[Task] = []
    for digest, job in planned.items():
        if job.all_hit and not request.params.get("materialize"):
            result = {"status": DEDUPLICATED, "outputs": [o.to_dict() for o in job.outputs]}
            for index, key in enumerate(groups[digest]):
                settle(object_result(key, digest, result, True, 0.0,
                                      Hashed(0.0, jobs[key].input_bytes), index > 0))
            saved += len(groups[digest])
            continue
        payload: dict[str, Any] = {**request.params, "bucket": request.src_bucket,
                                   "key": job.key, "dest_bucket": request.dest_bucket,
                                   "function": request.function}
        tasks.append(Task(digest, request.sequence, payload))
        saved += len(groups[digest]) - 1

    def on_outcome(outcome: Outcome) -> None:
        digest = outcome.key
        if outcome.error in (INTERRUPTED, ABANDONED):
            # Said as it is, never through the sequence's error text, whose first "word: "
            # is taken for the representative's key and dropped ("interrupted: ...").
            for key in groups[digest]:
                settle(interrupted(key, outcome.error, digest))
            return
        ok = outcome.status != TASK_FAILED
        result: Mapping[str, Any] = outcome.result or {}
        if not ok and "error" not in result:
            result = {"error": outcome.error or "failed"}
        for index, key in enumerate(groups[digest]):
            entry = object_result(key, digest, dict(result), ok,
                                   outcome.platform_ms if index == 0 else 0.0,
                                   Hashed(0.0, jobs[key].input_bytes), index > 0)
            settle(entry)

    _, stats = fanout.run(tasks, on_outcome=on_outcome, stop=stop)
    return settle.summary(keys), PlatformReport(stats, saved_invocations=saved)


class Settled:
    """The one entry of each object of a run on the platform, as it is settled (and handed
    to *on_result*), and the run's summary in key order (also used by ``map`` of a wrapped
    action)."""

    def __init__(self, on_result: Callable[[ObjectResult], None] | None) -> None:
        self.started = time.perf_counter()
        self.results: dict[str, ObjectResult] = {}
        self.on_result = on_result

    def __call__(self, entry: ObjectResult) -> None:
        self.results[entry.key] = entry
        if self.on_result is not None:
            self.on_result(entry)

    def summary(self, keys: list[str]) -> MapSummary:
        # A second Ctrl-C can land while a group's objects are being settled: the rest of
        # the group was not invoked on its own, so it is reported as interrupted, never
        # left out.
        ordered = [self.results.get(key) or interrupted(key, INTERRUPTED) for key in keys]
        return MapSummary(ordered, time.perf_counter() - self.started)


def interrupted(key: str, why: str, digest: str | None = None) -> ObjectResult:
    """A failed entry saying the run stopped before this object was done: a re-run does it."""
    return ObjectResult(key, FAILED, error=f"{key}: {why}", digest=digest)


def named(key: str, error: str) -> str:
    return error if error.startswith(key) else f"{key}: {error}"
