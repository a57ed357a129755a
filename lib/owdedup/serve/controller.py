"""Invocations and trigger fires for the REST front end, on the shared engine (no sockets).

OpenWhisk answers a non-blocking invoke, a fire, or a blocking invoke that outlives its wait,
with an activation id before the activation ends, and ``__OW_ACTIVATION_ID`` inside the action
is the id of the activation record: the controller picks the id, announces it and hands it to
the engine, which gives it to the runner and to the record.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from owdedup.engine.activation import (
    INTERNAL_ERROR,
    STATUS_CODES,
    SUCCESS,
    Activation,
    new_activation_id,
)
from owdedup.engine.executor import RULE_FAILURE_KIND, Engine, Runner, merge_params
from owdedup.engine.manifest import ActionDef, RuleDef
from owdedup.engine.pool import ContainerPool
from owdedup.runtime.errors import NotFoundError
from owdedup.serve.catalog import BUILTIN_KIND, ServeCatalog, now_ms
from owdedup.serve.errors import BadRequest
from owdedup.serve.limits import NamespaceLimits, Throttle

log = logging.getLogger("owdedup.serve")

#: OpenWhisk's answer to a payload that sets a parameter the action made final.
PARAMETERS_NOT_ALLOWED = ("Request defines parameters that are not allowed (e.g., reserved "
                          "properties).")

Builtin = Callable[[dict[str, Any]], dict[str, Any]]


#: What the kept activation records may weigh together (their JSON), by default.
STORE_BYTES = 64 * 1024 * 1024


def record_size(activation: Activation) -> int:
    """The bytes an activation record weighs: its JSON, as a client would fetch it."""
    return len(json.dumps(activation.to_dict(), default=str))


class ActivationStore:
    """The most recent activations, by id, thread-safe; bounded by count and by bytes (the
    oldest go first), so chatty activations cannot grow the server without end."""

    def __init__(self, capacity: int = 10_000, max_bytes: int = STORE_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Activation, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def put(self, activation: Activation) -> None:
        size = record_size(activation)
        with self._lock:
            old = self._items.pop(activation.activation_id, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[activation.activation_id] = (activation, size)
            self._bytes += size
            while len(self._items) > 1 and (len(self._items) > self.capacity
                                            or self._bytes > self.max_bytes):
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def get(self, activation_id: str) -> Activation | None:
        with self._lock:
            found = self._items.get(activation_id)
        return None if found is None else found[0]

    def list(self, name: str | None = None, since: int | None = None, upto: int | None = None
             ) -> list[Activation]:
        """Newest first; *name* matches ``pkg/action`` or the bare action name."""
        wanted = name.strip("/") if name else None
        if wanted and wanted.count("/") >= 2:  # "ns/pkg/action": drop the namespace
            wanted = wanted.split("/", 1)[1]
        with self._lock:
            items = [activation for activation, _ in self._items.values()]
        found = []
        for activation in items:
            full = activation.name.strip("/")
            if wanted and wanted not in (full, full.rpartition("/")[2]):
                continue
            if since is not None and activation.start_ms < since:
                continue
            if upto is not None and activation.start_ms > upto:
                continue
            found.append(activation)
        return sorted(found, key=lambda a: a.start_ms, reverse=True)


@dataclass(frozen=True)
class Pending:
    """An activation under way: its id is known, its record comes when it ends."""

    activation_id: str
    future: Future[Activation]

    def wait(self, timeout_s: float) -> Activation | None:
        try:
            return self.future.result(timeout=timeout_s)
        except FutureTimeout:
            return None


class SystemRunner:
    """Runs the built-in ``/whisk.system`` actions in this process, everything else in
    *fallback* (the process runner)."""

    def __init__(self, fallback: Runner) -> None:
        self.fallback = fallback
        self.handlers: dict[str, Builtin] = {}

    def register(self, fqn: str, handler: Builtin) -> None:
        self.handlers[fqn] = handler

    def run(
        self, action: ActionDef, params: dict[str, Any], activation_id: str
    ) -> tuple[Any, list[str], bool]:
        if action.runtime != BUILTIN_KIND:
            return self.fallback.run(action, params, activation_id)
        handler = self.handlers.get(action.fqn)
        if handler is None:
            return {"error": f"no built-in action {action.fqn}"}, [], True
        try:
            return handler(params), [], False
        except Exception as exc:  # noqa: BLE001 - a built-in's failure is its activation's error
            return {"error": str(exc) or type(exc).__name__}, traceback.format_exc().splitlines(), \
                True


class Controller:
    """Starts invocations and fires on their own threads and keeps their records."""

    def __init__(
        self,
        catalog: ServeCatalog,
        runner: Runner,
        *,
        store: ActivationStore | None = None,
        clock_ms: Callable[[], int] = now_ms,
        init_ms: Callable[[str], int | None] | None = None,
        limits: NamespaceLimits | None = None,
        containers: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store or ActivationStore()
        self.clock_ms = clock_ms
        self.namespace = catalog.namespace
        pool = ContainerPool(containers)
        self.throttle = Throttle(limits or NamespaceLimits(), pool)
        self.engine = Engine(catalog, runner, namespace=catalog.namespace, clock_ms=clock_ms,
                             on_activation=self.store.put, init_ms=init_ms, pool=pool)

    def invoke(self, name: str, payload: dict[str, Any]) -> Pending:
        """Start action or sequence *name*; raises NotFoundError for an unknown name and
        BadRequest for a payload that sets a ``final`` parameter (OpenWhisk's 400), and
        TooManyRequests past the namespace's limits (checked first, as OpenWhisk does)."""
        accepted = self.clock_ms()
        self.throttle.admit_invoke()
        entity = self.engine.resolve(name)
        if isinstance(entity, ActionDef) and \
                self.catalog.immutable_parameters(entity) & payload.keys():
            raise BadRequest(PARAMETERS_NOT_ALLOWED)
        return self._start(
            name, lambda activation_id: self.engine.invoke(name, payload,
                                                           activation_id=activation_id,
                                                           accepted_ms=accepted))

    def fire(self, trigger: str, payload: dict[str, Any]) -> Pending | None:
        """Fire *trigger*; None when it has no active rule (nothing runs, nothing is
        recorded). Raises NotFoundError for an unknown trigger and TooManyRequests past the
        namespace's fires per minute."""
        self.throttle.admit_fire()
        definition = self.catalog.trigger(trigger)
        if definition is None:
            raise NotFoundError(f"no trigger {trigger!r}")
        rules = self.catalog.rules_for(trigger)
        if not rules:
            return None

        def run(activation_id: str) -> Activation:
            activation = self.engine.fire(trigger, payload, activation_id=activation_id)
            activation.logs = [json.dumps(_rule_log(self.namespace, rule, step))
                               for rule, step in zip(rules, activation.components,
                                                     strict=False)]
            return activation

        placeholder = Activation("", self.namespace, definition.name, self.clock_ms(),
                                 self.clock_ms(), merge_params(definition.inputs, payload),
                                 SUCCESS, kind="trigger")
        return self._start(definition.name, run, placeholder=placeholder)

    def _start(self, name: str, work: Callable[[str], Activation], *,
               placeholder: Activation | None = None) -> Pending:
        activation_id = new_activation_id()
        future: Future[Activation] = Future()
        if placeholder is not None:  # a fire's record exists from the start, as OpenWhisk's
            placeholder.activation_id = activation_id
            self.store.put(placeholder)

        def target() -> None:
            start = self.clock_ms()
            try:
                activation = work(activation_id)
            except Exception as exc:  # recorded as a whisk internal error
                log.exception("activation %s of %s failed", activation_id, name)
                activation = Activation(activation_id, self.namespace, name, start,
                                        self.clock_ms(), {"error": f"{exc}"}, INTERNAL_ERROR)
                self.store.put(activation)
            future.set_result(activation)

        threading.Thread(target=target, name=f"activation-{activation_id[:8]}",
                         daemon=True).start()
        return Pending(activation_id, future)


def _rule_log(namespace: str, rule: RuleDef, step: Activation) -> dict[str, Any]:
    """A trigger activation's log line for one rule, as OpenWhisk writes it: the rule's
    activation id, or (its action missing) status 1 and the error."""
    entry: dict[str, Any] = {"statusCode": 0, "success": True,
                             "activationId": step.activation_id}
    if step.kind == RULE_FAILURE_KIND:
        entry = {"statusCode": STATUS_CODES[step.status], "success": False,
                 "error": step.result.get("error")}
    return {**entry, "rule": f"{namespace}/{rule.name}", "action": rule.action.strip("/")}
