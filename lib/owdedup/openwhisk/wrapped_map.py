"""``owdedup map CONDUCTOR SRC DEST --platform openwhisk``: a bucket through a wrapped action.

``CONDUCTOR`` is an action ``owdedup wrap`` created (``myfunction-dedup``). The client keys
each object exactly as the conductor's first activation would, so that work already done is
answered here and never invoked:

1. The conductor's definition is read through the REST API with the user's key: its bound
   ``owdedup_*`` configuration (:class:`~owdedup.runtime.wrapped.config.WrapConfig`: the
   wrapped action, the object references, the ignored parameters, the stores) — so the
   records looked up are the conductor's own.
2. The wrapped action's fingerprint is read once per run with the conductor's own code
   (:func:`~owdedup.runtime.wrapped.conductor.fingerprint_of`); each object is keyed with
   :func:`~owdedup.runtime.wrapped.keying.key_call` (checksum HEAD, else streamed), in
   threads, on exactly the parameters the conductor will get.
3. Calls with the same key (the same content, the same other parameters) are folded; each
   distinct key is looked up with :func:`~owdedup.runtime.wrapped.results.find_result`, and
   only the misses invoke the conductor, once each, through
   :class:`~owdedup.openwhisk.fanout.FanOut` (which keys the call again itself: an action
   updated during the run is never answered with a stale record).

Each object's parameters: the first declared object reference (``bucket``/``key`` by
default) names it, ``dest_bucket`` is DEST (none when DEST is ``-``), and every ``--param``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from owdedup.mapper import COMPUTED, DEDUPLICATED, FAILED, MapSummary, ObjectResult
from owdedup.openwhisk.client import Credentials, OpenWhiskClient, PlatformUnreachable
from owdedup.openwhisk.fanout import ABANDONED, INTERRUPTED, FanOut, Outcome, Task
from owdedup.openwhisk.fanout import FAILED as TASK_FAILED
from owdedup.openwhisk.mapping import (
    PlatformReport,
    Settled,
    ThreadContexts,
    interrupted,
    named,
)
from owdedup.runtime import env as env_names
from owdedup.runtime.context import Context
from owdedup.runtime.errors import ConfigError, NotFoundError, OwdedupError
from owdedup.runtime.wrapped.conductor import fingerprint_of
from owdedup.runtime.wrapped.config import ACTION, PREFIX, WrapConfig
from owdedup.runtime.wrapped.keying import CallKey, key_call
from owdedup.runtime.wrapped.results import METADATA_KEY, find_result, hit_metadata, with_metadata

#: The parameter DEST is given as, as to a Python file run locally (``owdedup map ./f.py``).
DEST_PARAM = "dest_bucket"


def platform_env(credentials: Credentials) -> dict[str, str]:
    """What an action's runtime gives it to call the REST API (``__OW_API_HOST``...), from
    the user's credentials: the conductor's own code then reads what it would read."""
    return {env_names.OW_API_HOST: credentials.apihost, env_names.OW_API_KEY: credentials.auth,
            env_names.OW_NAMESPACE: credentials.namespace}


@dataclass(frozen=True)
class WrappedTarget:
    """A conductor made by ``owdedup wrap``, as its first activation sees itself."""

    conductor: str
    config: WrapConfig
    #: The REST access its fingerprint is read with (holds the key: never in repr).
    env: Mapping[str, str] = field(repr=False)

    @classmethod
    def read(cls, client: OpenWhiskClient, conductor: str) -> WrappedTarget:
        """The conductor's bound configuration, read through the REST API; a clear error for
        an action that does not exist or is not a conductor ``owdedup wrap`` made."""
        try:
            reply = client.entity("GET", "actions", conductor)
        except PlatformUnreachable as exc:
            raise ConfigError(f"OpenWhisk does not answer: {exc}") from None
        if reply.status == 404:
            raise NotFoundError(f"{conductor}: no such function nor action (a wrapped action "
                                "is mapped by its conductor's name, e.g. myfunction-dedup)")
        if reply.status in (401, 403):
            raise ConfigError(f"OpenWhisk refused the key (HTTP {reply.status})")
        if reply.status != 200 or not isinstance(reply.body, dict):
            raise ConfigError(f"cannot read the action {conductor}: HTTP {reply.status}")
        bound = {str(p["key"]): p.get("value") for p in reply.body.get("parameters") or []
                 if isinstance(p, dict) and "key" in p}
        if ACTION not in bound:
            raise ConfigError(f"{conductor} is an action but not a conductor made by "
                              f"owdedup wrap (it binds no {ACTION}): wrap it first "
                              f"(owdedup wrap {conductor})")
        own = {k: v for k, v in bound.items() if k.startswith(PREFIX)}
        config = WrapConfig.from_params(own, {})
        if not config.objects:
            raise ConfigError(f"{conductor} declares no object parameters (owdedup wrap "
                              "--objects -): there is no parameter to give each object as")
        return cls(conductor, config, platform_env(client.credentials))

    def call_params(self, key: str, src_bucket: str, dest: str | None,
                    extra: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters the conductor gets for object *key*."""
        first = self.config.objects[0]
        params = dict(extra)
        if dest is not None:
            params[DEST_PARAM] = dest
        params[first.bucket], params[first.key] = src_bucket, key
        return params

    def check_params(self, extra: Mapping[str, Any]) -> None:
        """Refused before any work: a reserved name, a parameter SRC fills, a missing
        reference of the other declared objects."""
        reserved = sorted(k for k in extra if k.startswith(PREFIX))
        if reserved:
            raise ConfigError(f"--param {', '.join(reserved)}: the {PREFIX}* names are the "
                              "conductor's own")
        first = self.config.objects[0]
        taken = sorted({first.bucket, first.key} & set(extra))
        if taken:
            raise ConfigError(f"--param {', '.join(taken)}: given by SOURCE for each object "
                              f"(object reference {first})")
        missing = [n for ref in self.config.objects[1:] for n in (ref.bucket, ref.key)
                   if not isinstance(extra.get(n), str) or not extra.get(n)]
        if missing:
            raise ConfigError(f"{self.conductor} also reads the objects named by "
                              f"{', '.join(missing)}: give them with --param NAME=VALUE")

    def fingerprint(self) -> str:
        """The wrapped action's version, as the conductor reads it on each call."""
        return fingerprint_of(self.config, self.env)

    def key(self, params: Mapping[str, Any], fingerprint: str, context: Context) -> CallKey:
        """The record id the conductor keys *params* by (the same function, same inputs)."""
        return key_call(params, function=self.config.function, fingerprint=fingerprint,
                        objects=self.config.objects, ignore=self.config.ignore,
                        store=context.store)


def run_wrapped_map(
    target: WrappedTarget,
    src_bucket: str,
    dest: str | None,
    extra: Mapping[str, Any],
    keys: list[str],
    fanout: FanOut,
    *,
    threads: int = 16,
    on_hashed: Callable[[str], None] | None = None,
    on_result: Callable[[ObjectResult], None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[MapSummary, PlatformReport]:
    settle = Settled(on_result)
    fingerprint = target.fingerprint()  # a wrapped action that cannot be read: nothing runs
    contexts = ThreadContexts(target.config.settings)
    context = contexts.get

    params_of = {key: target.call_params(key, src_bucket, dest, extra) for key in keys}

    def keyed(key: str) -> tuple[str, CallKey | ObjectResult]:
        if stop is not None and stop.is_set():
            return key, interrupted(key, INTERRUPTED)
        at = time.perf_counter()
        try:
            return key, target.key(params_of[key], fingerprint, context())
        except OwdedupError as exc:
            return key, ObjectResult(key, FAILED, error=named(key, str(exc)),
                                     ms=(time.perf_counter() - at) * 1000)
        finally:
            if on_hashed is not None:
                on_hashed(key)

    def looked_up(call: CallKey) -> Any:
        return find_result(call, context().records, context().store)

    calls: dict[str, CallKey] = {}
    groups: dict[tuple[str, str], list[str]] = {}
    found: dict[tuple[str, str], Any] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for key, item in pool.map(keyed, keys):
                if isinstance(item, ObjectResult):
                    settle(item)
                    continue
                calls[key] = item
                groups.setdefault((item.function_id, item.input_digest), []).append(key)
            ids = list(groups)  # key order: the first name of a call is its representative
            for record_id, record in zip(ids, pool.map(looked_up,
                                                       [calls[groups[i][0]] for i in ids]),
                                         strict=True):
                found[record_id] = record
    finally:
        contexts.close()

    saved = 0
    tasks: list[Task] = []
    for record_id, members in groups.items():
        record = found.get(record_id)
        if record is not None and record.result is not None:
            result = with_metadata(record.result, hit_metadata(record), target.config.metadata)
            for key in members:
                settle(_entry(key, calls[key], result, DEDUPLICATED, 0.0, record.compute_ms))
            saved += len(members)
            continue
        representative = members[0]
        tasks.append(Task(_task_key(record_id), target.conductor, params_of[representative]))
        saved += len(members) - 1
    by_task = {_task_key(record_id): members for record_id, members in groups.items()}

    def on_outcome(outcome: Outcome) -> None:
        members = by_task[outcome.key]
        if outcome.error in (INTERRUPTED, ABANDONED):
            for key in members:
                settle(interrupted(key, outcome.error, calls[key].input_digest))
            return
        result: dict[str, Any] = dict(outcome.result or {})
        if outcome.status == TASK_FAILED or "error" in result:
            error = result.get("error") or outcome.error or "failed"
            for key in members:
                settle(ObjectResult(key, FAILED, error=named(key, str(error)),
                                    ms=outcome.platform_ms, digest=calls[key].input_digest,
                                    result=result or None))
            return
        found_meta = result.get(METADATA_KEY)
        meta: dict[str, Any] = found_meta if isinstance(found_meta, dict) else {}
        hit = bool(meta.get("hit"))  # another caller recorded it since our lookup
        compute_ms = float(meta.get("compute_ms") or meta.get("saved_ms") or 0.0)
        for index, key in enumerate(members):
            entry = _entry(key, calls[key], result, DEDUPLICATED if hit or index else COMPUTED,
                           outcome.platform_ms if index == 0 else 0.0,
                           compute_ms if hit or index else 0.0)
            if index == 0 and not hit and meta.get("record_error"):
                entry.record_error = str(meta["record_error"])
            settle(entry)

    _, stats = fanout.run(tasks, on_outcome=on_outcome, stop=stop)
    return settle.summary(keys), PlatformReport(stats, saved_invocations=saved)


def _task_key(record_id: tuple[str, str]) -> str:
    return f"{record_id[0]}/{record_id[1]}"


def _entry(key: str, call: CallKey, result: dict[str, Any], status: str, ms: float,
           saved_ms: float) -> ObjectResult:
    return ObjectResult(key, status, ms=ms, saved_ms=saved_ms, digest=call.input_digest,
                        input_bytes=call.input_bytes, result=result)
