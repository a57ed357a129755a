"""OpenWhisk's invocation semantics over a manifest: parameter merge, sequences, activations.

- An action's parameters are its package's defaults, overlaid by the action's defaults,
  overlaid by the payload (payload wins).
- In a sequence, the invocation's parameters reach only the first component; component i's
  result is component i+1's payload, merged over that component's own defaults.
- A component result with an ``error`` key ends the sequence: the sequence's result is that
  result ("application error").
- An uncaught exception: the Python runtime answers ``{"error": str(exc)}`` (traceback in the
  logs), which the controller classes as an "application error" like any error result.
- A runner failure (a result that is neither a JSON object nor an array, a timeout, code
  that cannot start) is an "action developer error": the runner reports it as *crashed*.
- A sequence counts the actions it runs, nested sequences included: beyond
  :data:`SEQUENCE_LIMIT` it ends with OpenWhisk's "Too many actions in the sequence.", and a
  sequence that (through others) contains itself ends with "Sequence may not refer to
  itself." (both application errors; ``owdedup serve`` refuses such sequences at create).
- An action with a truthy ``conductor`` annotation runs a composition (OpenWhisk's
  ``docs/conductors.md``; continuations, names and messages in :mod:`owdedup.engine.conductor`):
  its secondary activations alternate with the components they name, each component's result
  (errors included) goes back to the conductor with the last ``state`` written over it, a
  name that does not parse or resolve goes back as an error, a component that cannot be run
  at all ends the composition with a whisk internal error, and beyond n components (n =
  the sequence limit) or 2n+1 secondary activations the composition is too long.
- Records carry what OpenWhisk's do: the entity's version, ``waitTime``, ``initTime`` on a
  cold start (when the runner tells), ``timeout``, ``limits`` (with ``concurrency``),
  ``binding`` when reached through a package binding, ``causedBy: sequence`` and ``cause``
  on a sequence's or a composition's components, ``topmost`` on the outermost sequence; a
  composition's record is a sequence's (``kind: sequence``, logs = its derived activations'
  ids) plus ``conductor: true``, its duration the sum of theirs.

The engine is pure bookkeeping: running code is the runner's job, so the same engine serves
the in-process executor and the REST server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

from owdedup.actionloop.proxy import NOT_A_DICTIONARY
from owdedup.engine.activation import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    INTERNAL_ERROR,
    SUCCESS,
    TIMED_OUT_PREFIX,
    Activation,
    new_activation_id,
    qualified_path,
)
from owdedup.engine.conductor import (
    COMPOSITION_ACTIVATION_FAILURE,
    COMPOSITION_TOO_LONG,
    SYSTEM_NAMESPACE,
    CompositionAccounting,
    Continuation,
    EntityPath,
    component_invalid,
    component_not_accessible,
    component_not_found,
    is_conductor,
    resolve_name,
)
from owdedup.engine.manifest import ActionDef, RuleDef, SequenceDef, TriggerDef
from owdedup.engine.pool import ContainerPool
from owdedup.runtime.errors import ConfigError, NotFoundError
from owdedup.runtime.platform import Invocation, local_invoker

#: The ``kind`` of the failed activation standing for a rule whose action does not exist.
RULE_FAILURE_KIND = "rule"
#: OpenWhisk's default maximum of actions in a sequence (``limits.sequence_length``).
SEQUENCE_LIMIT = 50
SEQUENCE_TOO_LONG = "Too many actions in the sequence."
SEQUENCE_CYCLIC = "Sequence may not refer to itself."
SEQUENCE_COMPONENT_MISSING = "Sequence component does not exist."
#: What a sequence's or a composition's derived activations are annotated with.
CAUSED_BY_SEQUENCE = {"causedBy": "sequence"}

log = logging.getLogger("owdedup.engine")


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


def classify(result: Any, crashed: bool) -> tuple[Any, str]:
    """The activation's (result, status) for what an action returned: a JSON object or an
    array (the Python runtime accepts both)."""
    if crashed:
        return result, DEVELOPER_ERROR
    if isinstance(result, list):
        return result, SUCCESS
    if not isinstance(result, dict):
        return {"error": NOT_A_DICTIONARY}, DEVELOPER_ERROR
    if "error" in result:
        return result, APPLICATION_ERROR
    return result, SUCCESS


class _SequenceRun:
    """What one top-level invocation's nested sequences share: the actions run so far and
    the sequences under way."""

    def __init__(self) -> None:
        self.actions = 0
        self.open: list[str] = []


class Engine:
    def __init__(
        self,
        catalog: Catalog,
        runner: Runner,
        *,
        namespace: str = "guest",
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        on_activation: Callable[[Activation], None] | None = None,
        init_ms: Callable[[str], int | None] | None = None,
        pool: ContainerPool | None = None,
        sequence_limit: int = SEQUENCE_LIMIT,
    ) -> None:
        self.catalog = catalog
        self.runner = runner
        self.namespace = namespace
        self.clock_ms = clock_ms
        self.on_activation = on_activation
        #: activation id -> how long the runner's cold start took (None: warm, or unknown).
        self.init_ms = init_ms or (lambda _activation_id: None)
        self.pool = pool or ContainerPool()
        #: Actions in a sequence; components in a composition (which allows 2n+1 secondary
        #: conductor activations): OpenWhisk's ``limits.sequence_length``.
        self.sequence_limit = sequence_limit

    def resolve(self, name: str) -> ActionDef | SequenceDef:
        entity = self.catalog.action(name) or self.catalog.sequence(name)
        if entity is None:
            known = ", ".join(self.catalog.entity_names())
            raise MissingEntityError(name, f"no action or sequence {name!r} (known: {known})")
        return entity

    def invoke(
        self, name: str, payload: Mapping[str, Any], *, activation_id: str | None = None,
        accepted_ms: int | None = None,
    ) -> Activation:
        """Run *name*; *activation_id* lets a front end announce the id before the run ends,
        *accepted_ms* (when the request came in) gives the record its ``waitTime``."""
        entity = self.resolve(name)
        activation_id = activation_id or new_activation_id()
        if isinstance(entity, SequenceDef):
            return self._sequence(entity, dict(payload), activation_id, _SequenceRun(),
                                  topmost=True)
        if is_conductor(entity.annotations):
            return self._composition(entity, dict(payload), activation_id,
                                     CompositionAccounting())
        return self._action(entity, dict(payload), activation_id, accepted_ms)

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
        return self._sequence(entity, dict(result), new_activation_id(), _SequenceRun(),
                              topmost=True, skip=1)

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
        except MissingEntityError as exc:  # the rule's action (a sequence ends on its own)
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
        self, action: ActionDef, payload: dict[str, Any], activation_id: str,
        accepted_ms: int | None = None, extra: Mapping[str, Any] | None = None,
        cause: str | None = None,
    ) -> Activation:
        params = merge_params(self.catalog.package_inputs(action.binding or action.package),
                              action.inputs, payload)
        requested = self.clock_ms() if accepted_ms is None else accepted_ms
        with self.pool.activation():  # waits for a free container
            start = self.clock_ms()
            with local_invoker(self._invoke_from_action):
                raw, logs, crashed = self.runner.run(action, params, activation_id)
        result, status = classify(raw, crashed)
        annotations: dict[str, Any] = {
            "waitTime": max(0, start - requested),
            "timeout": isinstance(result, dict) and crashed
            and str(result.get("error", "")).startswith(TIMED_OUT_PREFIX),
            "limits": {"concurrency": 1, "logs": action.limits.log_mb,
                       "memory": action.limits.memory_mb, "timeout": action.limits.timeout_ms},
        }
        init_ms = self.init_ms(activation_id)
        if init_ms is not None:
            annotations["initTime"] = init_ms
        if action.binding:
            annotations["binding"] = qualified_path(self.namespace, action.binding)
        annotations.update(extra or {})
        return self._record(Activation(
            activation_id, self.namespace, action.fqn, start, self.clock_ms(),
            result, status, logs, kind=action.runtime or "python:3.11",
            annotations=annotations, version=action.version, cause=cause,
        ))

    def _sequence(
        self, sequence: SequenceDef, payload: dict[str, Any], activation_id: str,
        run: _SequenceRun, *, topmost: bool = False, skip: int = 0, cause: str | None = None,
    ) -> Activation:
        start = self.clock_ms()
        components: list[Activation] = []
        result: Any = payload
        status = SUCCESS
        run.open.append(sequence.fqn)
        try:
            for name in sequence.components[skip:]:
                try:
                    entity = self.resolve(name)
                except MissingEntityError:  # deleted since: OpenWhisk's words, no names
                    result, status = {"error": SEQUENCE_COMPONENT_MISSING}, APPLICATION_ERROR
                    break
                if isinstance(entity, SequenceDef) and entity.fqn in run.open:
                    result, status = {"error": SEQUENCE_CYCLIC}, APPLICATION_ERROR
                    break
                if isinstance(entity, ActionDef):
                    run.actions += 1
                    if run.actions > self.sequence_limit:
                        result, status = {"error": SEQUENCE_TOO_LONG}, APPLICATION_ERROR
                        break
                input_ = result if isinstance(result, dict) else {}
                if isinstance(entity, SequenceDef):
                    step = self._sequence(entity, input_, new_activation_id(), run,
                                          cause=activation_id)
                    step.annotations.update(CAUSED_BY_SEQUENCE)
                elif is_conductor(entity.annotations):  # its own limits, as OpenWhisk's
                    step = self._composition(entity, input_, new_activation_id(),
                                             CompositionAccounting(), cause=activation_id)
                else:
                    step = self._action(entity, input_, new_activation_id(),
                                        extra=CAUSED_BY_SEQUENCE, cause=activation_id)
                components.append(step)
                result = step.result
                if not step.success:
                    status = step.status
                    break
        finally:
            run.open.pop()
        annotations: dict[str, Any] = {"topmost": True} if topmost else {}
        return self._record(Activation(
            activation_id, self.namespace, sequence.fqn, start, self.clock_ms(),
            result, status, kind="sequence", components=components,
            annotations=annotations, version=sequence.version, cause=cause,
        ))

    def _composition(
        self, conductor: ActionDef, payload: dict[str, Any], activation_id: str,
        accounting: CompositionAccounting, *, cause: str | None = None,
    ) -> Activation:
        """Run conductor action *conductor* as OpenWhisk's controller does
        (``invokeComposition``): secondary activations alternating with the components they
        ask for; *accounting* is shared with the compositions this one runs.

        A result that is not a JSON object (an array) cannot be read as a continuation nor
        passed on as a payload: OpenWhisk's controller fails the composition there, so it
        ends as one that could not go on, with a whisk internal error."""
        start = self.clock_ms()
        derived: list[Activation] = []
        state: dict[str, Any] | None = None
        next_input = payload
        while True:
            if accounting.conductors > 2 * self.sequence_limit:
                result, status = {"error": COMPOSITION_TOO_LONG}, APPLICATION_ERROR
                break
            accounting.conductors += 1
            params = next_input if state is None else {**next_input, **state}
            step = self._derived(conductor.fqn, partial(
                self._action, conductor, params, new_activation_id(), extra=CAUSED_BY_SEQUENCE,
                cause=activation_id))
            if step is not None:
                derived.append(step)
            if step is None or not isinstance(step.result, dict):
                result, status = {"error": COMPOSITION_ACTIVATION_FAILURE}, INTERNAL_ERROR
                break
            turn = Continuation.of(step.result)
            state = turn.state
            if not turn.has_action:  # the end: the params if any, else the whole output
                result = step.result if turn.params is None else turn.params
                status = step.status
                break
            name = resolve_name(turn.action, self.namespace)
            if name is None:
                next_input = {"error": component_invalid(turn.action)}
                continue
            if accounting.components >= self.sequence_limit:
                next_input = {"error": COMPOSITION_TOO_LONG}
                continue
            entity = self._component(name)
            if isinstance(entity, str):  # why it cannot run
                next_input = {"error": entity}
                continue
            component = self._derived(name.qualified, partial(
                self._run_component, entity, turn.params or {}, activation_id, accounting))
            if component is not None:
                derived.append(component)
            if component is None or not isinstance(component.result, dict):
                result, status = {"error": COMPOSITION_ACTIVATION_FAILURE}, INTERNAL_ERROR
                break
            # Its result, an error included, is the conductor's next input.
            next_input = component.result
        memory = max([conductor.limits.memory_mb] + [
            int(step.annotations["limits"]["memory"]) for step in derived
            if isinstance(step.annotations.get("limits"), dict)
            and "memory" in step.annotations["limits"]])
        annotations: dict[str, Any] = {
            "topmost": cause is None, "conductor": True,
            **(CAUSED_BY_SEQUENCE if cause is not None else {}),
            "limits": {"concurrency": 1, "logs": conductor.limits.log_mb, "memory": memory,
                       "timeout": conductor.limits.timeout_ms},
        }
        return self._record(Activation(
            activation_id, self.namespace, conductor.fqn, start, self.clock_ms(), result,
            status, kind="sequence", components=derived, annotations=annotations,
            version=conductor.version, cause=cause,
            summed_duration_ms=sum(step.duration_ms for step in derived),
        ))

    def _component(self, name: EntityPath) -> ActionDef | SequenceDef | str:
        """The entity a continuation names, or the controller's words for why not: another
        namespace's entity is not ours to run (only ``whisk.system``'s are shared)."""
        if name.namespace not in (self.namespace, SYSTEM_NAMESPACE):
            return component_not_accessible(name.qualified)
        lookup = name.relative if name.namespace == self.namespace else f"/{name.qualified}"
        entity = self.catalog.action(lookup) or self.catalog.sequence(lookup)
        return component_not_found(name.qualified) if entity is None else entity

    def _run_component(
        self, entity: ActionDef | SequenceDef, params: dict[str, Any], cause: str,
        accounting: CompositionAccounting,
    ) -> Activation:
        if isinstance(entity, SequenceDef):  # one component, whatever it runs
            accounting.components += 1
            step = self._sequence(entity, params, new_activation_id(), _SequenceRun(),
                                  cause=cause)
            step.annotations.update(CAUSED_BY_SEQUENCE)
            return step
        if is_conductor(entity.annotations):  # counts its own, against the same limits
            return self._composition(entity, params, new_activation_id(), accounting,
                                     cause=cause)
        accounting.components += 1
        return self._action(entity, params, new_activation_id(), extra=CAUSED_BY_SEQUENCE,
                            cause=cause)

    @staticmethod
    def _derived(name: str, run: Callable[[], Activation]) -> Activation | None:
        """A derived activation, or None when it could not be run at all: OpenWhisk's
        "invocation failure", which ends the composition with an internal error."""
        try:
            return run()
        except Exception:  # any failure to run is the composition's end
            log.exception("composition: activation of %s failed", name)
            return None

    def _record(self, activation: Activation) -> Activation:
        if self.on_activation is not None:
            self.on_activation(activation)
        return activation
