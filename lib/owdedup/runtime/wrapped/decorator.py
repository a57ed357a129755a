"""``@dedup``: the same keying, records and metadata inside a Python action, no extra activation.

    from owdedup.runtime.wrapped.decorator import dedup

    @dedup(objects=["bucket/key"], ignore=["dest_bucket"], libraries=["numpy"])
    def main(params):
        ...

The function's identity is the SHA-256 of its module's source file, the Python version and
the versions of *libraries*; a call is keyed as the conductor keys one
(:mod:`owdedup.runtime.wrapped.keying`). Where the stores are comes from the ``owdedup_*``
parameters (``owdedup_store``, ``owdedup_records`` and their options, removed before
``main`` sees the call) or the ``OWDEDUP_STORE``/``OWDEDUP_RECORDS`` environment.

As joblib.Memory: a record store (or an object store) that fails only costs a
recomputation, logged, never an error. Bad input is still refused (a missing object, a
parameter that is not JSON: ``{"error": ...}`` naming the function and the object), and an
error result (an ``error`` key) is returned and not recorded.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from owdedup.runtime import env as env_names
from owdedup.runtime.config import Settings
from owdedup.runtime.context import ContextCache
from owdedup.runtime.counters import hit_saved_bytes
from owdedup.runtime.errors import BadInputError, ConfigError, NotFoundError, OwdedupError
from owdedup.runtime.wrapped.coalesce import await_or_claim, claimant_for, coalesced_metadata
from owdedup.runtime.wrapped.config import PREFIX, call_params
from owdedup.runtime.wrapped.identity import python_fingerprint
from owdedup.runtime.wrapped.keying import key_call, parse_objects
from owdedup.runtime.wrapped.results import (
    checking_store,
    find_result,
    hit_metadata,
    miss_metadata,
    record_result,
    replaced_object,
    with_metadata,
)

log = logging.getLogger("owdedup")

Main = Callable[[dict[str, Any]], dict[str, Any]]
_CONTEXTS = ContextCache()  # one per warm container


def dedup(objects: Iterable[str] | str | None = None, ignore: Iterable[str] = (),
          libraries: Iterable[str] = (), *, function: str = "", metadata: bool = True,
          contexts: ContextCache = _CONTEXTS) -> Callable[[Main], Main]:
    """Deduplicate the decorated ``main(params) -> dict``. *objects*: the object references
    (``"bucket/key"`` by default; ``[]`` for none); *ignore*: parameters that do not affect
    the output; *libraries*: distributions whose versions are part of its identity;
    *function*: the name records are counted under (default: the action's name, else the
    module's)."""
    refs = parse_objects(objects if objects is None or isinstance(objects, str)
                         else list(objects))
    ignored = tuple(ignore)
    libs = tuple(libraries)

    def decorate(main: Main) -> Main:
        source = Path(inspect.getsourcefile(main) or "")
        fingerprint: list[str] = []  # computed at the first call, then kept

        @functools.wraps(main)
        def deduplicated(params: dict[str, Any]) -> dict[str, Any]:
            name = function or _action_name() or source.stem
            if not fingerprint:
                fingerprint.append(python_fingerprint(source, libs) + ":" + main.__qualname__
                                   + _deployed_version())
            return _call(main, params, name, fingerprint[0])

        def _call(main: Main, params: dict[str, Any], name: str, print_: str) -> dict[str, Any]:
            own = {k[len(PREFIX):]: v for k, v in params.items() if str(k).startswith(PREFIX)}
            args = call_params(params)
            try:
                context = contexts.get(Settings.resolve(own))
                store = context.store if refs else None
                call = key_call(args, function=name, fingerprint=print_, objects=refs,
                                ignore=ignored, store=store)
            except (NotFoundError, ConfigError) as exc:  # bad input: the call's own fault
                return {"error": f"{name}: {exc}", "error_kind": exc.kind}
            except OwdedupError as exc:  # a store that fails: compute, do not fail
                log.warning("%s: cannot deduplicate (%s); computing", name, exc)
                return main(args)
            try:
                records = context.records
            except OwdedupError as exc:  # even a record store that cannot be opened
                log.warning("record store unavailable, computing %s: %s", name, exc)
                return main(args)
            checking = store if refs else checking_store(context, False)
            record = find_result(call, records, checking)
            claimant, turn = claimant_for(records, os.environ), None
            if record is None or record.result is None:  # identical calls in flight: one runs
                record, turn = await_or_claim(call, records, checking, claimant)
                if turn.took_over:
                    context.counts.add(name, took_over=1)
            if record is not None and record.result is not None:
                context.counts.add(name, hits=1, saved_ms=record.compute_ms,
                                   saved_bytes=hit_saved_bytes(
                                       record.input_bytes, [record.output.bytes]),
                                   coalesced=int(turn is not None))
                meta = hit_metadata(record) if turn is None else coalesced_metadata(record, turn)
                return with_metadata(record.result, meta, metadata)
            with claimant.holding(None if turn is None else turn.lease):  # recorded, let go
                started = time.perf_counter()
                result = main(args)
                compute_ms = (time.perf_counter() - started) * 1000
                if not isinstance(result, dict) or "error" in result:
                    return result  # an error (or a list) is never recorded
                activation = os.environ.get("__OW_ACTIVATION_ID", "")
                try:
                    problem = (replaced_object(call, store)
                               or record_result(call, result, records,
                                                compute_ms=compute_ms, activation=activation))
                except BadInputError as exc:  # over the result limit: OpenWhisk would refuse
                    return {"error": f"{name}: {exc}", "error_kind": exc.kind}
            context.counts.add(name, misses=1)
            return with_metadata(result, miss_metadata(activation, compute_ms, problem),
                                 metadata)

        return deduplicated

    return decorate


def _deployed_version(environ: Mapping[str, str] | None = None) -> str:
    """Inside OpenWhisk, the action and its version: the action's code is its whole zip, not
    only the module of ``main`` (its helpers may change alone), and every update of the
    action gives it a new version. Empty outside OpenWhisk."""
    env = os.environ if environ is None else environ
    name, version = env.get(env_names.OW_ACTION_NAME, ""), env.get(env_names.OW_ACTION_VERSION, "")
    return f":{name}@{version}" if name and version else ""


def _action_name(environ: Mapping[str, str] | None = None) -> str:
    """``/ns/pkg/name`` (OpenWhisk's ``__OW_ACTION_NAME``) -> ``pkg/name``."""
    full = (os.environ if environ is None else environ).get("__OW_ACTION_NAME", "")
    parts = full.strip("/").split("/", 1)
    return parts[1] if len(parts) == 2 else ""
