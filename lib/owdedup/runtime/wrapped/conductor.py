"""The conductor that puts any OpenWhisk action behind hash -> lookup -> run -> record.

An action with the ``conductor`` annotation is run by OpenWhisk up to twice per call here:

1. First activation (no ``owdedup_state``): the declared objects are hashed (store checksum,
   else streamed) and the call's key is looked up. A hit ends the composition with the
   recorded result (``{"params": result}``: the composition's result is then exactly the
   result, whatever keys it has); the wrapped action never starts. A miss returns the
   continuation ``{"action": <wrapped, fully qualified>, "params": <the call's parameters>,
   "state": {"owdedup_state": ...}}``.
2. Second activation: OpenWhisk runs it on the wrapped action's result with the state merged
   over it. The result is recorded and returned; an error result (``error`` key, which is
   also what OpenWhisk passes when the action cannot be resolved or runs out of time) is
   returned as it is and not recorded.

The state carries what the second activation needs (key, function, start time), never a
credential, and is signed with a key derived from the conductor's API key and its own
secrets, so an invoker cannot hand it a forged state to plant a record. (A local run with
neither has nothing secret to sign with; there, whoever can invoke it can write the records
anyway.) A genuine state can still be replayed (it is in the invoker's activation records):
the second activation records only while the lease the state carries is held, so a state
records at most while its own call is in flight, never after it was let go.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from owdedup.runtime import env as env_names
from owdedup.runtime.context import Context, ContextCache
from owdedup.runtime.counters import hit_saved_bytes
from owdedup.runtime.digest import canonical_json
from owdedup.runtime.errors import ConfigError, OwdedupError
from owdedup.runtime.wrapped.coalesce import (
    await_or_claim,
    claimant_for,
    coalesced_metadata,
    conductor_lease_s,
    lease_not_held,
    lease_state,
    release_from_state,
)
from owdedup.runtime.wrapped.config import ACTION, OBJECTS, STATE, WrapConfig, call_params
from owdedup.runtime.wrapped.identity import (
    action_fingerprint,
    fully_qualified,
    pinned_fingerprint,
)
from owdedup.runtime.wrapped.keying import DEFAULT_OBJECTS, CallKey, key_call, parse_objects
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

STATE_SCHEMA = 1
#: What a conductor's output is read for by OpenWhisk (a continuation), besides "error".
CONTINUATION_KEYS = ("action", "params", "state")
_CONTEXTS = ContextCache()  # one per warm container, as the step actions keep theirs


def conductor_main(params: dict[str, Any], environ: Mapping[str, str] | None = None,
                   contexts: ContextCache = _CONTEXTS) -> dict[str, Any]:
    """One activation of the conductor: the first (look up) or the second (record)."""
    env = os.environ if environ is None else environ
    action = str(params.get(ACTION) or "?")
    try:
        config = WrapConfig.from_params(params, env)
        context = contexts.get(config.settings)
        if STATE in params:
            return finish(config, params, context, env)
        return start(config, call_params(params), context, env)
    except OwdedupError as exc:
        message = f"{action}: {exc}"
        named = _objects_of(params)
        if named and named not in message:  # the action and the object, always
            message += f" (object {named})"
        return {"error": message, "error_kind": exc.kind}


def _objects_of(params: Mapping[str, Any]) -> str:
    """``bucket/key`` of the call's declared objects that it names, for error messages."""
    try:
        objects = parse_objects(params.get(OBJECTS))
    except OwdedupError:
        objects = DEFAULT_OBJECTS
    return ", ".join(f"{params[o.bucket]}/{params[o.key]}" for o in objects
                     if isinstance(params.get(o.bucket), str)
                     and isinstance(params.get(o.key), str))


def fingerprint_of(config: WrapConfig, env: Mapping[str, str]) -> str:
    if config.version:
        return pinned_fingerprint(config.function, config.version)
    return action_fingerprint(config.action, env, config.ignore)


def start(config: WrapConfig, params: dict[str, Any], context: Context,
          env: Mapping[str, str]) -> dict[str, Any]:
    """Hash, look up; end with the recorded result, or continue with the wrapped action."""
    target = fully_qualified(config.action, env)  # a name that cannot run: before any claim
    call = key_call(params, function=config.function, fingerprint=fingerprint_of(config, env),
                    objects=config.objects, ignore=config.ignore,
                    store=context.store if config.objects else None)
    store = checking_store(context, bool(config.objects))
    record = find_result(call, context.records, store)
    turn = None
    if record is None or record.result is None:  # identical calls in flight: one runs
        claimant = claimant_for(context.records, env, conductor_lease_s(
            config.action, env, pinned=bool(config.version)))
        record, turn = await_or_claim(call, context.records, store, claimant)
        if turn.took_over:
            context.counts.add(call.function, took_over=1)
    if record is not None and record.result is not None:
        context.counts.add(call.function, hits=1, saved_ms=record.compute_ms,
                           saved_bytes=hit_saved_bytes(record.input_bytes,
                                                       [record.output.bytes]),
                           coalesced=int(turn is not None))
        meta = hit_metadata(record) if turn is None else coalesced_metadata(record, turn)
        return {"params": with_metadata(record.result, meta, config.metadata)}
    state = {
        "schema": STATE_SCHEMA, "function": call.function, "function_id": call.function_id,
        "input_digest": call.input_digest, "input_bytes": call.input_bytes,
        "param_names": list(call.param_names), "objects": call.objects,
        "started_ms": _now_ms(), **lease_state(None if turn is None else turn.lease),
    }
    return {"action": target, "params": params,
            "state": {STATE: {**state, "sig": _sign(state, config, env)}}}


def finish(config: WrapConfig, params: dict[str, Any], context: Context,
           env: Mapping[str, str]) -> dict[str, Any]:
    """Record the wrapped action's result (not an error) and return it."""
    call, started_ms = _verified_state(params.get(STATE), config, env)
    try:
        return _finish(config, params, context, env, call, started_ms)
    finally:  # recorded (or failed): a caller waiting for it finds the record (or computes)
        release_from_state(params[STATE], call, context.records)


def _finish(config: WrapConfig, params: dict[str, Any], context: Context,
            env: Mapping[str, str], call: CallKey, started_ms: float) -> dict[str, Any]:
    result = call_params(params)
    if "error" in result:
        log.warning("%s failed on %s; not recorded", call.function,
                    ", ".join(call.objects) or "its parameters")
        # Returned as the conductor's own output, where "action" would be run next and
        # "params" would replace the error as the composition's result: such keys go.
        result = {k: v for k, v in result.items() if k not in CONTINUATION_KEYS}
        # Named in the metadata: OpenWhisk's own errors (unresolvable action, timeout) do
        # not say which wrapper and which objects they concern.
        return with_metadata(result, {"hit": False, "recorded": False, "action": config.action,
                                      "objects": sorted(call.objects)}, config.metadata)
    compute_ms = max(0.0, _now_ms() - started_ms)
    activation = env.get("__OW_ACTIVATION_ID", "")
    # The state is in the invoker's activation records and can be replayed with any result:
    # it is recorded only while the lease it carries is still held, so once let go (recorded
    # or failed) or taken over, a state records nothing (it only costs a recomputation).
    not_recorded = (lease_not_held(params[STATE], call, context.records)
                    or replaced_object(call, context.store if call.objects else None)
                    or record_result(call, result, context.records, compute_ms=compute_ms,
                                     activation=activation))
    context.counts.add(call.function, misses=1)
    final = with_metadata(result, miss_metadata(activation, compute_ms, not_recorded),
                          config.metadata)
    return {"params": final}


def _verified_state(state: Any, config: WrapConfig,
                    env: Mapping[str, str]) -> tuple[CallKey, float]:
    if not isinstance(state, dict) or state.get("schema") != STATE_SCHEMA:
        raise ConfigError(f"{STATE} is not a state this conductor wrote")
    body = {k: v for k, v in state.items() if k != "sig"}
    if not hmac.compare_digest(str(state.get("sig", "")), _sign(body, config, env)):
        raise ConfigError(f"{STATE} does not carry this conductor's signature: "
                          "it was not written by its first activation")
    try:
        call = CallKey(str(body["function"]), str(body["function_id"]),
                       str(body["input_digest"]), int(body["input_bytes"]),
                       tuple(map(str, body["param_names"])), dict(body["objects"]))
        return call, float(body["started_ms"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{STATE} is incomplete: {exc}") from None


def _sign(state: Mapping[str, Any], config: WrapConfig, env: Mapping[str, str]) -> str:
    """HMAC-SHA256 of the state, keyed by what only this conductor holds: the API key
    OpenWhisk gives it and its bound secrets (and its configuration, so that the state of
    one wrapper is not accepted by another)."""
    secret = canonical_json([env.get(env_names.OW_API_KEY, ""), list(config.secrets()),
                             config.action, config.settings.records_url,
                             config.settings.store_url])
    key = hashlib.sha256(b"owdedup-conductor-state\0" + secret.encode()).digest()
    return hmac.new(key, canonical_json(dict(state)).encode(), hashlib.sha256).hexdigest()


def _now_ms() -> float:
    return time.time() * 1000
