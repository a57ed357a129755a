"""Activation records, shaped like OpenWhisk's own (``wsk activation get`` output)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# OpenWhisk's response statuses and their numeric codes.
SUCCESS = "success"
APPLICATION_ERROR = "application error"
DEVELOPER_ERROR = "action developer error"
INTERNAL_ERROR = "whisk internal error"
STATUS_CODES = {SUCCESS: 0, APPLICATION_ERROR: 1, DEVELOPER_ERROR: 2, INTERNAL_ERROR: 3}
#: How OpenWhisk's invoker words a time-out; an activation whose error starts so carries the
#: annotation ``timeout: true``.
TIMED_OUT_PREFIX = "The action exceeded its time limits"


def log_line(stream: str, text: str, when: float | None = None) -> str:
    """An activation log line as OpenWhisk writes it: ``<ISO time> <stream>: <text>``
    (*when* in seconds since the epoch, now if None)."""
    moment = datetime.now(UTC) if when is None else datetime.fromtimestamp(when, UTC)
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {stream}: {text}"


def new_activation_id() -> str:
    return uuid.uuid4().hex


def qualified_path(namespace: str, name: str) -> str:
    """``namespace/[package/]action`` for an entity name: "pkg/a" and "/a" (no package)
    are in *namespace*; "/whisk.system/pkg/a" names its own namespace."""
    if name.startswith("/") and name.count("/") >= 2:
        return name[1:]
    return f"{namespace}/{name.lstrip('/')}"


@dataclass
class Activation:
    activation_id: str
    namespace: str
    name: str  # fully qualified inside the namespace: "pkg/action"
    start_ms: int
    end_ms: int
    result: Any  # a JSON object, or an array (OpenWhisk's runtimes accept both)
    status: str
    logs: list[str] = field(default_factory=list)
    kind: str = "python:3.11"
    components: list[Activation] = field(default_factory=list)  # for sequences
    annotations: dict[str, Any] = field(default_factory=dict)
    version: str = "0.0.1"  # the action's (or sequence's) version when it ran
    #: The activation of the sequence or composition that caused this one (None: topmost).
    cause: str | None = None
    #: OpenWhisk's figure when it is not ``end - start``: a composition's is the sum of its
    #: derived activations' durations.
    summed_duration_ms: int | None = None

    @property
    def success(self) -> bool:
        return self.status == SUCCESS

    @property
    def duration_ms(self) -> int:
        if self.summed_duration_ms is not None:
            return self.summed_duration_ms
        return self.end_ms - self.start_ms

    def to_dict(self) -> dict[str, Any]:
        path = qualified_path(self.namespace, self.name)
        package, _, action = path.partition("/")[2].rpartition("/")
        annotations = [{"key": "path", "value": path},
                       {"key": "kind", "value": self.kind}]
        annotations += [{"key": k, "value": v} for k, v in self.annotations.items()]
        return {
            "activationId": self.activation_id,
            "namespace": self.namespace,
            "name": action,
            "version": self.version,
            "subject": self.namespace,
            "start": self.start_ms,
            "end": self.end_ms,
            "duration": self.duration_ms,
            "publish": False,
            "annotations": annotations,
            "response": {
                "status": self.status,
                "statusCode": STATUS_CODES[self.status],
                "success": self.success,
                "result": self.result,
            },
            # A sequence's (or composition's) logs are its components' (derived activations')
            # ids, as OpenWhisk reports them.
            "logs": [c.activation_id for c in self.components] if self.kind == "sequence"
            else self.logs,
            **({"package": package} if package else {}),
            **({"cause": self.cause} if self.cause else {}),
        }
