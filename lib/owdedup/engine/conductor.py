"""Conductor actions (OpenWhisk's ``docs/conductors.md``): the pure parts of a composition.

A conductor is an action whose ``conductor`` annotation is truthy. Each of its (secondary)
activations returns either an error dictionary or a continuation ``{action, params,
state}``; the engine (:meth:`owdedup.engine.executor.Engine.invoke`) runs the loop, this
module reads continuations and names as the controller does
(``PrimitiveActions.invokeConductor``, ``FullyQualifiedEntityName.resolveName``) and holds
the controller's words for each failure (``Messages``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: The annotation that makes an action a conductor.
CONDUCTOR = "conductor"
#: OpenWhisk's EntityName: a word character first, no blank last (ASCII ``\\w``, as Java's).
ENTITY_NAME = re.compile(r"\A(?:\w|\w[\w@ .-]*[\w@.-]+)\Z", re.ASCII)
#: The namespace whose packages every namespace may use.
SYSTEM_NAMESPACE = "whisk.system"

COMPOSITION_TOO_LONG = "Too many actions in the composition."
COMPOSITION_ACTIVATION_FAILURE = "Activation failure during composition."


def component_invalid(value: Any) -> str:
    """The name in ``action`` does not parse (the value printed as compact JSON)."""
    printed = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return f"Failed to parse action name from json value {printed} during composition."


def component_not_found(qualified: str) -> str:
    return f"Failed to resolve action with name '{qualified}' during composition."


def component_not_accessible(qualified: str) -> str:
    return f"Failed entitlement check for action with name '{qualified}' during composition."


def is_truthy(value: Any) -> bool:
    """The docs' truthiness of an annotation: anything but absent, null, false, zero and the
    empty string (so the string ``"false"`` is truthy, as in OpenWhisk)."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    return True


def is_conductor(annotations: dict[str, Any]) -> bool:
    return is_truthy(annotations.get(CONDUCTOR))


@dataclass(frozen=True)
class EntityPath:
    """An entity's fully qualified name, ``namespace/[package/]name``: a conductor's
    component here, any entity in ``owdedup serve``'s catalog."""

    namespace: str
    package: str  # "" for the default package
    name: str

    @property
    def relative(self) -> str:
        """The name inside its namespace, as the catalogs look actions up."""
        return f"{self.package}/{self.name}" if self.package else self.name

    @property
    def qualified(self) -> str:
        """As the controller prints it in its messages: no leading slash."""
        return f"{self.namespace}/{self.relative}"

    @property
    def absolute(self) -> str:
        """As entities are written in documents (a sequence's components, a rule's action):
        with the leading slash."""
        return f"/{self.qualified}"


def resolve_name(value: Any, namespace: str) -> EntityPath | None:
    """The continuation's ``action`` as a fully qualified name, or None if it does not parse.

    As OpenWhisk: only a string; its non-empty ``/``-separated parts must be entity names, one
    to three of them; ``/ns/a`` and ``/ns/pkg/a`` (and any three parts) are fully qualified;
    ``a`` and ``pkg/a`` are in *namespace*; ``/a`` is refused; ``_`` as the namespace is
    *namespace*.
    """
    if not isinstance(value, str):
        return None
    parts = [part for part in value.split("/") if part]
    if not parts or not all(ENTITY_NAME.match(part) for part in parts):
        return None
    leading_slash = value.startswith("/")
    if len(parts) > 3 or (leading_slash and len(parts) == 1):
        return None
    if not (leading_slash or len(parts) == 3):
        parts = [namespace, *parts]
    if parts[0] == "_":
        parts[0] = namespace
    if len(parts) == 3:
        return EntityPath(parts[0], parts[1], parts[2])
    return EntityPath(parts[0], "", parts[1])


def box(value: Any, key: str) -> dict[str, Any]:
    """A dictionary as is; anything else as ``{key: value}``."""
    return value if isinstance(value, dict) else {key: value}


@dataclass(frozen=True)
class Continuation:
    """What one secondary activation of a conductor asks for."""

    has_action: bool
    action: Any  # any JSON value: parsing it is the composition's business
    params: dict[str, Any] | None  # boxed as {"value": v}; None when absent
    state: dict[str, Any] | None  # boxed as {"state": v}; None when absent

    @classmethod
    def of(cls, result: Any) -> Continuation:
        fields = result if isinstance(result, dict) else {}
        return cls(
            has_action="action" in fields,
            action=fields.get("action"),
            params=box(fields["params"], "value") if "params" in fields else None,
            state=box(fields["state"], "state") if "state" in fields else None,
        )


@dataclass
class CompositionAccounting:
    """Activations counted against the limits, shared with nested compositions: components
    (a sequence counts as one) and secondary conductor activations."""

    components: int = 0
    conductors: int = 0
