"""OpenWhisk's invocation semantics over a manifest: parameter merge, sequences, activations.

- An action's parameters are its package's defaults, overlaid by the action's defaults,
  overlaid by the payload (payload wins).
- In a sequence, the invocation's parameters reach only the first component; component i's
  result is component i+1's payload, merged over that component's own defaults.
- A component result with an ``error`` key ends the sequence: the sequence's result is that
  result ("application error").
- An uncaught exception: the Python runtime answers ``{"error": str(exc)}`` (traceback in the
  logs), which the controller classes as an "application error" like any error result.
- A runner failure (a result that is not a dict, a timeout, code that cannot start) is an
  "action developer error": the runner reports it as *crashed*.

The engine is pure bookkeeping: running code is the runner's job, so the same engine serves
the in-process executor and the REST server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from owdedup.engine.activation import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    SUCCESS,
    Activation,
    new_activation_id,
)
from owdedup.engine.manifest import ActionDef, RuleDef, SequenceDef, TriggerDef
from owdedup.runtime.errors import ConfigError, NotFoundError
from owdedup.runtime.platform import Invocation, local_invoker

#: The ``kind`` of the failed activation standing for a rule whose action does not exist.
RULE_FAILURE_KIND = "rule"


class MissingEntityError(NotFoundError):
    """No action or sequence *name* (what :meth:`Engine.resolve` raises)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class Runner(Protocol):
    def run(
        self, action: ActionDef, params: dict[str, Any], activation_id: str
    ) -> tuple[Any, list[str], bool]: ...


class Catalog(Protocol):
    """Where entities come from: a manifest file, or what clients PUT to the REST server."""

    def action(self, fqn: str) -> ActionDef | None: ...
    def sequence(self, fqn: str) -> SequenceDef | None: ...
    def trigger(self, name: str) -> TriggerDef | None: ...
    def rules_for(self, trigger: str) -> list[RuleDef]: ...  # active rules only
    def package_inputs(self, package: str) -> dict[str, Any]: ...
    def entity_names(self) -> list[str]: ...


def merge_params(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win: package defaults, then action defaults, then the payload."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return merged


def classify(result: Any, crashed: bool) -> tuple[dict[str, Any], str]:
    """The activation's (result, status) for what an action returned."""
    if crashed:
        return result, DEVELOPER_ERROR
    if not isinstance(result, dict):
        return {"error": "The action did not return a dictionary."}, DEVELOPER_ERROR
    if "error" in result:
        return result, APPLICATION_ERROR
    return result, SUCCESS


class Engine:
    def __init__(
        self,
        catalog: Catalog,
        runner: Runner,
        *,
        namespace: str = "guest",
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        on_activation: Callable[[Activation], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.runner = runner
        self.namespace = namespace
        self.clock_ms = clock_ms
        self.on_activation = on_activation

    def resolve(self, name: str) -> ActionDef | SequenceDef:
        entity = self.catalog.action(name) or self.catalog.sequence(name)
        if entity is None:
            known = ", ".join(self.catalog.entity_names())
            raise MissingEntityError(name, f"no action or sequence {name!r} (known: {known})")
        return entity

    def invoke(
        self, name: str, payload: Mapping[str, Any], *, activation_id: str | None = None
    ) -> Activation:
        """Run *name*; *activation_id* lets a front end announce the id before the run ends."""
        entity = self.resolve(name)
        if isinstance(entity, SequenceDef):
            return self._sequence(entity, dict(payload), activation_id or new_activation_id())
        return self._action(entity, dict(payload), activation_id or new_activation_id())

    def resume(self, name: str, after: str, result: Mapping[str, Any]) -> Activation:
        """Run sequence *name* from the component after its first one, *after*, on the
        *result* that *after* returned: what the sequence itself would do next.

        For a caller that ran *after* itself: ``map`` runs ``hash`` in its first phase to
        group identical contents, and its digest reaches ``lookup`` as the sequence would
        pass it, without a second hash. OpenWhisk has no such entry point, so nothing from
        outside the process can skip a step.
        """
        entity = self.resolve(name)
        if not isinstance(entity, SequenceDef) or entity.components[:1] != (after,):
            raise ConfigError(f"{name!r} is not a sequence that starts with {after!r}")
        return self._sequence(entity, dict(result), new_activation_id(), skip=1)

    def fire(
        self, trigger: str, payload: Mapping[str, Any], *, activation_id: str | None = None
    ) -> Activation:
        """Fire *trigger*: every rule on it invokes its action with the trigger's payload
        (the trigger's own parameters overlaid by the fired payload)."""
        definition = self.catalog.trigger(trigger)
        if definition is None:
            raise NotFoundError(f"no trigger {trigger!r}")
        params = merge_params(definition.inputs, payload)
        start = self.clock_ms()
        fired = [self._fire_rule(rule, params) for rule in self.catalog.rules_for(trigger)]
        return self._record(Activation(
            activation_id or new_activation_id(), self.namespace, definition.name, start,
            self.clock_ms(), params, SUCCESS, kind="trigger", components=fired,
        ))

    def _fire_rule(self, rule: RuleDef, params: dict[str, Any]) -> Activation:
        """One rule's activation; a rule whose action is gone is a failed activation of its
        own (as OpenWhisk reports it), so it cannot keep the trigger's other rules from
        running."""
        start = self.clock_ms()
        try:
            return self.invoke(rule.action, params)
        except MissingEntityError as exc:  # the action, or a component of its sequence
            return self._record(Activation(
                new_activation_id(), self.namespace, rule.action, start, self.clock_ms(),
                {"error": f"The requested resource does not exist: rule {rule.name!r} "
                          f"invokes {exc.name!r}, which does not exist."},
                APPLICATION_ERROR, kind=RULE_FAILURE_KIND,
            ))

    def _invoke_from_action(
        self, name: str, params: dict[str, Any], blocking: bool
    ) -> Invocation:
        # In process every invoke completes before it returns; "non-blocking" only means the
        # caller does not need the result.
        activation = self.invoke(name, params)
        return Invocation(activation.activation_id, activation.success, activation.result)

    def _action(
        self, action: ActionDef, payload: dict[str, Any], activation_id: str
    ) -> Activation:
        params = merge_params(self.catalog.package_inputs(action.package), action.inputs, payload)
        start = self.clock_ms()
        with local_invoker(self._invoke_from_action):
            raw, logs, crashed = self.runner.run(action, params, activation_id)
        result, status = classify(raw, crashed)
        return self._record(Activation(
            activation_id, self.namespace, action.fqn, start, self.clock_ms(),
            result, status, logs, kind=action.runtime or "python:3.11",
            annotations={"limits": {"timeout": action.limits.timeout_ms,
                                    "memory": action.limits.memory_mb,
                                    "logs": action.limits.log_mb}},
        ))

    def _sequence(
        self, sequence: SequenceDef, payload: dict[str, Any], activation_id: str,
        skip: int = 0,
    ) -> Activation:
        start = self.clock_ms()
        components: list[Activation] = []
        result: dict[str, Any] = payload
        status = SUCCESS
        for name in sequence.components[skip:]:
            entity = self.resolve(name)
            if isinstance(entity, SequenceDef):
                step = self._sequence(entity, result, new_activation_id())
            else:
                step = self._action(entity, result, new_activation_id())
            components.append(step)
            result = step.result
            if not step.success:
                status = step.status
                break
        return self._record(Activation(
            activation_id, self.namespace, sequence.fqn, start, self.clock_ms(),
            result, status, kind="sequence", components=components,
        ))

    def _record(self, activation: Activation) -> Activation:
        if self.on_activation is not None:
            self.on_activation(activation)
        return activation
