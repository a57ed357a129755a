"""The payload that travels through the sequence: each step's result is the next one's input.

Only the fields below travel, and of the invocation's other parameters only those the job's
function declares (``DedupFunction.parameters``). Store URLs and credentials arrive as bound
parameters of each action and are deliberately not part of a job, so they never appear in a
result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from owdedup.runtime.digest import is_sha256_hex
from owdedup.runtime.errors import ConfigError
from owdedup.runtime.functions import DEFAULT_FUNCTION, get_function


@dataclass
class Output:
    """One variant's output: planned by ``lookup``, filled by the compute step or a record."""

    size: int  # the variant's size (thumbnails), else 0
    function_id: str
    bucket: str
    key: str
    hit: bool = False
    bytes: int = 0
    width: int = 0
    height: int = 0
    compute_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Output:
        try:
            return cls(
                size=int(data["size"]),
                function_id=str(data["function_id"]),
                bucket=str(data["bucket"]),
                key=str(data["key"]),
                hit=bool(data.get("hit", False)),
                bytes=int(data.get("bytes", 0)),
                width=int(data.get("width", 0)),
                height=int(data.get("height", 0)),
                compute_ms=float(data.get("compute_ms", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed output entry {dict(data)!r}: {exc}") from exc


@dataclass
class Job:
    bucket: str
    key: str
    dest_bucket: str = ""
    function: str = DEFAULT_FUNCTION
    params: dict[str, Any] = field(default_factory=dict)  # the function's own parameters
    materialize: bool = False
    digest: str | None = None
    input_bytes: int = 0
    digest_source: str | None = None
    outputs: list[Output] = field(default_factory=list)
    compute_ms: float = 0.0
    status: str | None = None
    recorded: bool | None = None
    record_error: str | None = None  # why 'recorded' is false
    copies: list[dict[str, Any]] = field(default_factory=list)
    #: Records found but not believed (see Record.mismatch): each one was a miss.
    rejected_records: int = 0
    #: The outputs came from an identical computation in flight: this activation waited
    #: (waited_ms) for the one that held the lease instead of computing (runtime.inflight).
    coalesced: bool = False
    waited_ms: float = 0.0
    #: This activation took over the expired lease of one that was killed or timed out.
    took_over: bool = False

    @property
    def name(self) -> str:
        return f"{self.bucket}/{self.key}"

    @property
    def all_hit(self) -> bool:
        return bool(self.outputs) and all(o.hit for o in self.outputs)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, default_dest: str = "") -> Job:
        bucket, key = params.get("bucket"), params.get("key")
        if not isinstance(bucket, str) or not bucket:
            raise ConfigError("missing parameter 'bucket' (the input bucket)")
        if not isinstance(key, str) or not key:
            raise ConfigError("missing parameter 'key' (the input object key)")
        digest = params.get("digest")
        if digest is not None and not is_sha256_hex(digest):
            raise ConfigError(f"bad digest {digest!r}: not a SHA-256 hex digest", key=key)
        try:
            input_bytes = int(params.get("input_bytes") or 0)
        except (TypeError, ValueError):
            raise ConfigError("bad parameter 'input_bytes': not an integer", key=key) from None
        outputs = params.get("outputs") or []
        if not isinstance(outputs, list):
            raise ConfigError("bad parameter 'outputs': not a list", key=key)
        function = get_function(str(params.get("function") or DEFAULT_FUNCTION))
        return cls(
            bucket=bucket,
            key=key,
            dest_bucket=str(params.get("dest_bucket") or default_dest),
            function=function.name,
            params={name: params[name] for name in function.parameters if name in params},
            materialize=_flag(params.get("materialize", False)),
            digest=digest,
            input_bytes=input_bytes,
            digest_source=params.get("digest_source"),
            outputs=[Output.from_dict(o) for o in outputs],
            compute_ms=float(params.get("compute_ms") or 0.0),
            status=params.get("status"),
            recorded=params.get("recorded"),
            record_error=params.get("record_error"),
            copies=list(params.get("copies") or []),
            rejected_records=_count(params.get("rejected_records")),
            coalesced=_flag(params.get("coalesced", False)),
            waited_ms=_milliseconds(params.get("waited_ms")),
            took_over=_flag(params.get("took_over", False)),
        )

    def to_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "bucket": self.bucket,
            "key": self.key,
            "dest_bucket": self.dest_bucket,
            "function": self.function,
            **self.params,
            "materialize": self.materialize,
        }
        if self.digest is not None:
            result["digest"] = self.digest
            result["input_bytes"] = self.input_bytes
            result["digest_source"] = self.digest_source
        if self.outputs:
            result["outputs"] = [o.to_dict() for o in self.outputs]
            result["compute_ms"] = self.compute_ms
        if self.status is not None:
            result["status"] = self.status
            result["recorded"] = self.recorded
            if self.record_error is not None:
                result["record_error"] = self.record_error
        if self.copies:
            result["copies"] = self.copies
        if self.rejected_records:
            result["rejected_records"] = self.rejected_records
        if self.coalesced or self.waited_ms or self.took_over:
            result.update(coalesced=self.coalesced, waited_ms=round(self.waited_ms, 1),
                          took_over=self.took_over)
        return result


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        raise ConfigError(f"bad parameter 'rejected_records': {value!r}") from None


def _milliseconds(value: Any) -> float:
    try:
        return max(0.0, float(value or 0.0))
    except (TypeError, ValueError):
        raise ConfigError(f"bad parameter 'waited_ms': {value!r}") from None


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
