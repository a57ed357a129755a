"""Fan many invocations out over OpenWhisk within the namespace's limits, losing none.

One coordinator thread decides what is issued; worker threads each carry one *attempt* (a
blocking invoke that falls back to polling the activation when OpenWhisk answers 202). Every
task ends as exactly one :class:`Outcome`, ``succeeded`` or ``failed`` with its reason:

* 429 (throttled): the attempt is not counted, the task goes back to the front of the queue,
  the window halves and issuing pauses (``Retry-After`` when given, else an exponential
  back-off with jitter); successes widen the window again by one per window's worth
  (additive increase, multiplicative decrease: the namespace's limit is found, not guessed).
* An activation that failed as a developer or internal error (timeout, out of memory, a
  killed process), a 5xx without an activation, an unreachable API host, or an activation
  that never reports: retried up to ``max_attempts``; the work is deduplicated, so a retry or
  a duplicate run costs time, never a wrong result.
* An application error (the function refused its input): final, not retried.
* 401/403 (the key): final for every task, nothing more is issued. 404 (no such action) and
  400/413 (a payload OpenWhisk refuses): final for the task.
* Stragglers: once ``straggler_after`` of the tasks are done, a task running longer than
  ``straggler_factor`` times the median gets one backup attempt; the first result wins.

``stop`` (an event, set on Ctrl-C) ends issuing; what is in flight is awaited, and the tasks
never started end as failed with ``interrupted`` so a re-run picks them up. A
``KeyboardInterrupt`` while running (a second Ctrl-C) abandons what is in flight: those
tasks end as failed with ``interrupted: abandoned...``, and the run still returns.
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from owdedup.openwhisk.client import OpenWhiskClient, PlatformUnreachable, Reply

SUCCEEDED, FAILED = "succeeded", "failed"
INTERRUPTED = "interrupted: the run was stopped before this object was invoked"
ABANDONED = ("interrupted: abandoned while in flight (its activation may still finish; "
             "a re-run picks up what it did not)")
#: OpenWhisk's ``response.status`` values for an activation that did not succeed.
APPLICATION_ERROR = "application error"


@dataclass(frozen=True)
class Task:
    key: str  # the caller's name for it (an object key)
    action: str  # fully qualified: "owdedup/dedup-thumbnail"
    params: Mapping[str, Any]


@dataclass
class Outcome:
    key: str
    status: str  # SUCCEEDED or FAILED
    result: dict[str, Any] | None = None
    error: str | None = None
    activation_id: str | None = None
    attempts: int = 0
    platform_ms: float = 0.0  # the winning activation's duration
    cold: bool = False
    backup_won: bool = False


@dataclass
class FanOutStats:
    invocations: int = 0  # POSTs OpenWhisk accepted (429s are not invocations)
    throttled: int = 0  # 429s met, and absorbed by re-queueing
    retries: int = 0
    backups: int = 0
    lost: int = 0  # accepted activations that never reported before their deadline
    cold_starts: int = 0
    platform_ms: float = 0.0  # summed duration of every activation that reported
    window_min: int = 0
    window_max: int = 0


@dataclass(frozen=True)
class FanOutPolicy:
    window: int = 100  # most attempts in flight: the namespace's concurrent limit
    max_attempts: int = 3
    task_deadline_s: float = 900.0  # for one task, over all of its attempts
    blocking_wait_ms: int = 60_000  # how long one blocking invoke asks OpenWhisk to wait
    poll_initial_s: float = 0.05
    poll_max_s: float = 2.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    straggler_after: float = 0.8
    straggler_factor: float = 3.0
    #: Never back up an attempt younger than this: a backup is for a stuck invoker, not for
    #: a cold start on a busy machine (it costs an invocation, though never a wrong result).
    straggler_min_s: float = 30.0


# -- one attempt (runs in a worker thread) ----------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    """What one attempt came to."""

    kind: str  # "done", "throttled", "retry", "fatal", "fatal-all"
    activation: Mapping[str, Any] | None = None
    error: str | None = None
    retry_after_s: float | None = None
    accepted: bool = True  # OpenWhisk took the POST (it is an invocation)


def _attempt(client: OpenWhiskClient, task: Task, policy: FanOutPolicy, deadline: float,
             clock: Callable[[], float], sleep: Callable[[float], None],
             wanted: Callable[[], bool]) -> _Attempt:
    wait_ms = max(1, min(policy.blocking_wait_ms, int((deadline - clock()) * 1000)))
    try:
        reply = client.invoke(task.action, task.params, blocking=True, timeout_ms=wait_ms)
    except PlatformUnreachable as exc:
        return _Attempt("retry", error=f"OpenWhisk did not answer ({exc})", accepted=False)
    if reply.status in (200, 502) and _is_activation(reply.body):
        return _Attempt("done", activation=reply.body)
    if reply.status == 202 and isinstance(reply.body, dict) and reply.body.get("activationId"):
        return _poll(client, str(reply.body["activationId"]), policy, deadline, clock, sleep,
                     wanted)
    if reply.status in (200, 502):
        return _Attempt("retry", error=f"HTTP {reply.status} without a readable activation")
    return _refused(task, reply)


def _is_activation(body: Any) -> bool:
    """An activation record the coordinator can read: anything else from the platform (or a
    proxy in front of it) is an attempt to retry, never an exception that ends the run."""
    return (isinstance(body, dict) and isinstance(body.get("response"), dict)
            and isinstance(body.get("duration", 0), int | float)
            and isinstance(body.get("annotations", []), list))


def _refused(task: Task, reply: Reply) -> _Attempt:
    said = reply.body.get("error") if isinstance(reply.body, dict) else None
    detail = f" ({said})" if said else ""
    if reply.status == 429:
        return _Attempt("throttled", error=f"429{detail}", retry_after_s=reply.retry_after_s,
                        accepted=False)
    if reply.status in (401, 403):
        return _Attempt("fatal-all", accepted=False,
                        error=f"OpenWhisk refused the key: HTTP {reply.status}{detail}")
    if reply.status == 404:
        return _Attempt("fatal", accepted=False,
                        error=f"no action {task.action} in this namespace{detail}")
    if 400 <= reply.status < 500:
        return _Attempt("fatal", accepted=False,
                        error=f"OpenWhisk refused the invocation: HTTP {reply.status}{detail}")
    return _Attempt("retry", accepted=False, error=f"HTTP {reply.status}{detail}")


def _poll(client: OpenWhiskClient, activation_id: str, policy: FanOutPolicy, deadline: float,
          clock: Callable[[], float], sleep: Callable[[float], None],
          wanted: Callable[[], bool]) -> _Attempt:
    interval = policy.poll_initial_s
    while clock() < deadline:
        if not wanted():  # the task was settled by another attempt, or the run is over
            return _Attempt("retry", error=f"activation {activation_id} no longer awaited")
        try:
            reply = client.activation(activation_id)
        except PlatformUnreachable:
            reply = None
        if reply is not None and reply.status == 200:
            if _is_activation(reply.body):
                return _Attempt("done", activation=reply.body)
            return _Attempt("retry", error=f"activation {activation_id} is not readable")
        sleep(min(interval, max(0.0, deadline - clock())))
        interval = min(policy.poll_max_s, interval * 2)
    return _Attempt("retry", error=f"activation {activation_id} never reported")


# -- the coordinator --------------------------------------------------------------------------


@dataclass
class _Running:
    task: Task
    started: float
    backup: bool


@dataclass
class _State:
    attempts: int = 0
    deadline: float = math.inf  # set when first issued: time waiting in the queue is free
    not_before: float = 0.0  # a retry's back-off
    last_error: str | None = None
    running: int = 0
    backed_up: bool = False
    outcome: Outcome | None = None


@dataclass
class _Window:
    """Additive increase, multiplicative decrease, bounded by the policy's window."""

    size: int
    ceiling: int
    successes: int = 0
    paused_until: float = 0.0
    failures_in_row: int = 0
    decreased_at: float = -math.inf
    seen: list[int] = field(default_factory=list)

    def throttled(self, now: float, issued_at: float, retry_after: float | None,
                  policy: FanOutPolicy) -> None:
        if issued_at < self.decreased_at:
            # Issued before the last decrease: the same congestion, already answered. A full
            # window of 429s arriving together halves the window once, not down to one.
            if retry_after is not None:
                self.paused_until = max(self.paused_until, now + retry_after)
            return
        self.decreased_at = now
        self.size = max(1, self.size // 2)
        self.failures_in_row += 1
        backoff = min(policy.backoff_max_s,
                      policy.backoff_initial_s * 2 ** (self.failures_in_row - 1))
        pause = retry_after if retry_after is not None else backoff * random.uniform(0.5, 1.0)
        self.paused_until = max(self.paused_until, now + pause)
        self.seen.append(self.size)

    def succeeded(self) -> None:
        self.failures_in_row = 0
        self.successes += 1
        if self.successes >= self.size and self.size < self.ceiling:
            self.size += 1
            self.successes = 0
            self.seen.append(self.size)


class FanOut:
    def __init__(self, client: OpenWhiskClient, policy: FanOutPolicy | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.policy = policy or FanOutPolicy()
        self._clock, self._sleep = clock, sleep
        #: The current run's counters and attempts in flight, for a progress display.
        self.stats = FanOutStats()
        self.in_flight = 0

    def run(self, tasks: Iterable[Task], *, on_outcome: Callable[[Outcome], None] | None = None,
            stop: threading.Event | None = None) -> tuple[list[Outcome], FanOutStats]:
        policy, clock = self.policy, self._clock
        todo = list(tasks)
        if len({t.key for t in todo}) != len(todo):
            raise ValueError("task keys must be unique")
        stop = stop or threading.Event()
        stats = self.stats = FanOutStats()
        window = _Window(size=max(1, policy.window), ceiling=max(1, policy.window))
        window.seen.append(window.size)
        states = {t.key: _State() for t in todo}
        queue: deque[Task] = deque(todo)
        running: dict[Future[_Attempt], _Running] = {}
        durations: list[float] = []
        fatal_all: str | None = None
        over = threading.Event()  # the run has returned: its attempts need not poll on

        def wanted(key: str) -> Callable[[], bool]:
            # A backup race's loser, or an attempt abandoned by a second Ctrl-C, stops
            # polling: a worker thread left polling to its deadline (15 min by default)
            # would hold the process at exit, which joins executor threads.
            return lambda: not over.is_set() and states[key].outcome is None

        def finish(key: str, outcome: Outcome) -> None:
            state = states[key]
            if state.outcome is not None:
                return  # a backup's loser, or a late answer after the task was settled
            state.outcome = outcome
            if on_outcome is not None:
                on_outcome(outcome)

        def fail(task: Task, error: str) -> None:
            finish(task.key, Outcome(task.key, FAILED, error=error,
                                     attempts=states[task.key].attempts))

        self.client.hold_connections(window.ceiling)
        pool = ThreadPoolExecutor(max_workers=window.ceiling + 8,
                                  thread_name_prefix="owdedup-fanout")
        try:
            while queue or running:
                now = clock()
                issuing = not stop.is_set() and fatal_all is None and now >= window.paused_until
                deferred: list[Task] = []
                while issuing and queue and len(running) < window.size:
                    task = queue.popleft()
                    state = states[task.key]
                    if state.outcome is not None:
                        continue
                    if state.deadline == math.inf:
                        # The deadline bounds the task's own attempts, not its time in the
                        # queue: a run longer than one deadline must not fail its tail unrun.
                        state.deadline = now + policy.task_deadline_s
                    elif now >= state.deadline:
                        fail(task, state.last_error or "deadline passed before it could run")
                        continue
                    if now < state.not_before:
                        deferred.append(task)
                        continue
                    state.attempts += 1
                    state.running += 1
                    future = pool.submit(_attempt, self.client, task, policy, state.deadline,
                                         clock, self._sleep, wanted(task.key))
                    running[future] = _Running(task, now, backup=False)
                queue.extendleft(reversed(deferred))
                if issuing and policy.straggler_factor > 0:
                    self._back_up_stragglers(running, states, durations, len(todo), window,
                                             pool, stats, wanted)
                if not running:
                    if stop.is_set() or fatal_all is not None:
                        break
                    self._sleep(min(0.05, max(0.0, window.paused_until - clock())) or 0.01)
                    continue
                self.in_flight = len(running)
                done, _ = wait(list(running), timeout=0.05, return_when=FIRST_COMPLETED)
                for future in done:
                    slot = running.pop(future)
                    task, state = slot.task, states[slot.task.key]
                    state.running -= 1
                    attempt = future.result()
                    if attempt.accepted:
                        stats.invocations += 1
                    if attempt.kind == "done" and attempt.activation is not None:
                        outcome = self._settle(task, attempt.activation, state, slot, stats)
                        if outcome is not None:
                            durations.append(clock() - slot.started)
                            window.succeeded()
                            finish(task.key, outcome)
                            # A backup race's loser is left to end on its own: not awaited.
                            for other in [f for f, r in running.items() if r.task is task]:
                                del running[other]
                            continue
                        attempt = _Attempt("retry", error=state.last_error)
                    if state.outcome is not None:
                        continue
                    if attempt.kind == "throttled":
                        stats.throttled += 1
                        if not slot.backup:  # a backup was never counted as an attempt
                            state.attempts -= 1  # a 429 is not an attempt at the work
                        window.throttled(clock(), slot.started, attempt.retry_after_s, policy)
                        if state.running == 0:
                            queue.appendleft(task)
                    elif attempt.kind == "fatal-all":
                        fatal_all = attempt.error
                        fail(task, attempt.error or "refused")
                    elif attempt.kind == "fatal":
                        fail(task, attempt.error or "refused")
                    elif state.running == 0:  # "retry", and no backup still running
                        state.last_error = attempt.error
                        if "never reported" in (attempt.error or ""):
                            stats.lost += 1
                        if state.attempts >= policy.max_attempts or clock() >= state.deadline:
                            fail(task, f"{attempt.error} (after {state.attempts} attempts)")
                        else:
                            stats.retries += 1
                            state.not_before = clock() + min(
                                policy.backoff_max_s,
                                policy.backoff_initial_s * 2 ** (state.attempts - 1))
                            queue.append(task)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: abandon what is in flight, keep what is done
        finally:
            over.set()
            pool.shutdown(wait=False, cancel_futures=True)
        self.in_flight = 0
        for task in todo:
            if states[task.key].outcome is None:
                fail(task, fatal_all or (ABANDONED if states[task.key].running
                                         else INTERRUPTED))
        stats.window_min, stats.window_max = min(window.seen), max(window.seen)
        outcomes = [states[t.key].outcome for t in todo]
        return [o for o in outcomes if o is not None], stats

    def _settle(self, task: Task, activation: Mapping[str, Any], state: _State, slot: _Running,
                stats: FanOutStats) -> Outcome | None:
        """The outcome an activation gives, or None when it should be retried."""
        response = activation.get("response") or {}
        duration = float(activation.get("duration") or 0.0)
        annotations = {a.get("key"): a.get("value") for a in activation.get("annotations") or ()
                       if isinstance(a, dict)}
        cold = "initTime" in annotations
        stats.platform_ms += duration
        stats.cold_starts += int(cold)
        result = response.get("result")
        result = result if isinstance(result, dict) else {"value": result}
        activation_id = str(activation.get("activationId", ""))
        if response.get("success") is True or response.get("status") == "success":
            return Outcome(task.key, SUCCEEDED, result=result, activation_id=activation_id,
                           attempts=state.attempts, platform_ms=duration, cold=cold,
                           backup_won=slot.backup)
        error = result.get("error")
        text = error if isinstance(error, str) else repr(error)
        if response.get("status") == APPLICATION_ERROR:
            return Outcome(task.key, FAILED, result=result, error=text,
                           activation_id=activation_id, attempts=state.attempts,
                           platform_ms=duration, cold=cold, backup_won=slot.backup)
        state.last_error = f"{response.get('status', 'failed')}: {text} ({activation_id})"
        return None

    def _back_up_stragglers(self, running: dict[Future[_Attempt], _Running],
                            states: Mapping[str, _State], durations: list[float], total: int,
                            window: _Window, pool: ThreadPoolExecutor, stats: FanOutStats,
                            wanted: Callable[[str], Callable[[], bool]]) -> None:
        policy = self.policy
        if not durations or len(durations) < policy.straggler_after * total:
            return
        threshold = max(policy.straggler_min_s,
                        policy.straggler_factor * statistics.median(durations))
        now = self._clock()
        for slot in list(running.values()):
            state = states[slot.task.key]
            if (slot.backup or state.backed_up or state.outcome is not None
                    or now - slot.started < threshold or len(running) >= window.size):
                continue
            state.backed_up = True
            state.running += 1
            stats.backups += 1
            future = pool.submit(_attempt, self.client, slot.task, policy, state.deadline,
                                 self._clock, self._sleep, wanted(slot.task.key))
            running[future] = _Running(slot.task, now, backup=True)
