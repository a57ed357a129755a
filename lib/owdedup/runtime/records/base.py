"""The record-store interface and the record it stores.

One record per (function identity, input digest): the identity already covers the function's
code, output-affecting parameters and library versions, so a record never has to be
invalidated, only ignored when the identity changes. Writes are insert-if-absent: two
concurrent writers of the same record both succeed and both get the one stored record.

Hit counters live apart from records so that counting a hit never rewrites a hot record.

A *lease* claims a record's key while one activation computes it (see :class:`Lease`), so
that identical work in flight runs once. Leases live beside the records, under the same key,
never in a record: a record's insert-if-absent, its readers and ``stats()`` never meet one.

A record holds one of two kinds of output: an object a function wrote (``output`` names it:
the thumbnail's), or the JSON *result* a function returned (a wrapped OpenWhisk action's, up
to OpenWhisk's 1 MB result limit): then ``result`` holds it, ``output`` has no bucket or key
and counts its bytes, and ``activation`` is the activation that produced it.

A *negative* record holds no output but a ``failure``: the function refused this input as
bad (``BadInputError``: not an image, truncated, over the limits), which it would do again
for the same content, code and parameters; a re-run answers the same error without reading
the input. Only such deterministic refusals are recorded, never a transient failure.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from owdedup.runtime.digest import canonical_json
from owdedup.runtime.errors import BadInputError, StoreError

#: Characters of a refusal's message kept in a negative record.
MAX_FAILURE_TEXT = 2000
#: OpenWhisk's limit on an activation's result (and so on a recorded one), in bytes.
RESULT_LIMIT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class OutputRef:
    """Where one output lives, and what it is."""

    bucket: str
    key: str
    bytes: int
    width: int = 0
    height: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "bytes": self.bytes,
                "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutputRef:
        return cls(
            bucket=str(data["bucket"]),
            key=str(data["key"]),
            bytes=int(data.get("bytes", 0)),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
        )


@dataclass(frozen=True)
class Record:
    function: str
    function_id: str
    input_digest: str
    output: OutputRef
    params: dict[str, Any] = field(default_factory=dict)
    compute_ms: float = 0.0
    input_bytes: int = 0
    created: str = ""
    #: The JSON result, for a function whose output is a result, not an object (see above).
    result: dict[str, Any] | None = None
    #: The activation that produced the output, where the platform names one.
    activation: str = ""
    #: A negative record's refusal: {"kind": "bad-input", "message": <the cause, without
    #: the object's name>, "judged": <the function's full normalised parameters>}.
    failure: dict[str, Any] | None = None
    #: What the function identity was computed from (code digest, library versions,
    #: parameters: ``runtime.identity.identity_parts``), so that a miss can be explained.
    identity: dict[str, Any] | None = None

    @classmethod
    def for_failure(
        cls, *, function: str, function_id: str, input_digest: str, message: str,
        judged: dict[str, Any], input_bytes: int = 0, created: str = "",
        activation: str = "",
    ) -> Record:
        """A negative record: *function* refused this input with *message*, judging it with
        the parameters *judged* (limits that are no part of the identity included)."""
        return cls(function=function, function_id=function_id, input_digest=input_digest,
                   output=OutputRef("", "", 0), input_bytes=input_bytes, created=created,
                   activation=activation,
                   failure={"kind": BadInputError.kind, "message": message[:MAX_FAILURE_TEXT],
                            "judged": copy.deepcopy(judged)})

    def failure_mismatch(self, function_id: str, input_digest: str,
                         judged: Mapping[str, Any]) -> str | None:
        """Why this record cannot be the negative record for (*function_id*,
        *input_digest*) judged with the parameters *judged*; None when it can."""
        if self.function_id != function_id:
            return f"its function identity is {self.function_id[:16]}..."
        if self.input_digest != input_digest:
            return f"its input digest is {self.input_digest[:16]}..."
        failure = self.failure
        if not isinstance(failure, dict) or failure.get("kind") != BadInputError.kind:
            return "it records no bad-input failure"
        if not isinstance(failure.get("message"), str):
            return "its failure has no message"
        if self.result is not None or self.output.bucket or self.output.key:
            return "it names an output as well as a failure"
        if failure.get("judged") != dict(judged):
            return "it was judged with other parameters (limits)"
        return None

    @classmethod
    def for_result(
        cls, *, function: str, function_id: str, input_digest: str, result: dict[str, Any],
        params: dict[str, Any] | None = None, compute_ms: float = 0.0, input_bytes: int = 0,
        created: str = "", activation: str = "",
    ) -> Record:
        """A record of a JSON *result*; refused (``BadInputError``, nothing recorded) when it
        is over OpenWhisk's result limit or is not JSON."""
        try:
            size = len(canonical_json(result).encode("ascii"))
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"the result of {function} is not JSON ({exc}); "
                                "not recorded") from None
        if size > RESULT_LIMIT_BYTES:
            raise BadInputError(
                f"the result of {function} is {size} bytes, over OpenWhisk's "
                f"{RESULT_LIMIT_BYTES}-byte result limit; not recorded")
        return cls(function=function, function_id=function_id, input_digest=input_digest,
                   output=OutputRef("", "", size), params=dict(params or {}),
                   compute_ms=compute_ms, input_bytes=input_bytes, created=created,
                   result=copy.deepcopy(result), activation=activation)

    @property
    def record_id(self) -> str:
        """Deterministic id: a lookup is one read by id, two writers meet on one id."""
        return record_id(self.function_id, self.input_digest)

    def to_dict(self) -> dict[str, Any]:
        # Spelled out, not dataclasses.asdict: its recursive deep copy was most of the cost
        # of a bulk load (put_many of a million records).
        return {
            "function": self.function, "function_id": self.function_id,
            "input_digest": self.input_digest, "output": self.output.to_dict(),
            "params": copy.deepcopy(self.params), "compute_ms": self.compute_ms,
            "input_bytes": self.input_bytes, "created": self.created,
            "result": copy.deepcopy(self.result), "activation": self.activation,
            "failure": copy.deepcopy(self.failure),
            "identity": copy.deepcopy(self.identity),
        }

    def mismatch(self, function_id: str, input_digest: str, output_key: str,
                 output_bucket: str | None = None) -> str | None:
        """Why this record cannot be the one for (*function_id*, *input_digest*), whose
        output is named *output_key* (in *output_bucket*, when given); None when it can.

        A record store can be written by others than this code (a CouchDB without
        credentials, a shared SQLite file), so a record is believed only when its own key
        fields are the lookup's and its output has the one name those fields derive: a
        forged record pointing at another content's object is then a miss, not a hit.
        """
        if self.function_id != function_id:
            return f"its function identity is {self.function_id[:16]}..."
        if self.input_digest != input_digest:
            return f"its input digest is {self.input_digest[:16]}..."
        if self.failure is not None:
            return "it records a failure, not an output"
        if self.output.key != output_key:
            return f"its output {self.output.key!r} is not the name derived from its key"
        if output_bucket is not None and self.output.bucket != output_bucket:
            # The derived name is public: anyone who can write some other bucket (an upload
            # bucket, say) could plant an object under it there and point a record at it.
            return f"its output is in bucket {self.output.bucket!r}, not {output_bucket!r}"
        return None

    def result_mismatch(self, function_id: str, input_digest: str) -> str | None:
        """Why this record cannot be the result record for (*function_id*, *input_digest*);
        None when it can. As :meth:`mismatch`: its key fields must be the lookup's, and it
        must hold a result (a dict) and no object, of the size it declares."""
        if self.function_id != function_id:
            return f"its function identity is {self.function_id[:16]}..."
        if self.input_digest != input_digest:
            return f"its input digest is {self.input_digest[:16]}..."
        if not isinstance(self.result, dict):
            return "it holds no result"
        if self.output.bucket or self.output.key:
            return f"it names an object ({self.output.key!r}) as well as a result"
        try:
            size = len(canonical_json(self.result).encode("ascii"))
        except (TypeError, ValueError):
            return "its result is not JSON"
        if size != self.output.bytes:
            return f"its result is {size} bytes, not the {self.output.bytes} it declares"
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        try:
            return cls(
                function=str(data["function"]),
                function_id=str(data["function_id"]),
                input_digest=str(data["input_digest"]),
                output=OutputRef.from_dict(data["output"]),
                params=dict(data.get("params") or {}),
                compute_ms=float(data.get("compute_ms", 0.0)),
                input_bytes=int(data.get("input_bytes", 0)),
                created=str(data.get("created", "")),
                result=_result_of(data.get("result")),
                activation=str(data.get("activation") or ""),
                failure=_result_of(data.get("failure")),
                identity=_result_of(data.get("identity")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"malformed record: {exc}") from exc


def _result_of(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"result is a {type(value).__name__}, not an object")
    return value


def record_id(function_id: str, input_digest: str) -> str:
    return f"{function_id}-{input_digest}"


@dataclass(frozen=True)
class Lease:
    """An in-progress claim on a record's key: *owner* (an activation id) is computing it.

    Claimed by a create-if-absent write, so of several claimants exactly one wins. Valid
    until *expires_at* (epoch seconds, the claimant's clock): the owner renews it while it
    computes; once it has expired (the owner was killed or timed out) one waiter takes it
    over with a write that names *revision*, so again exactly one wins. The owner removes it
    once the record is written, or when it fails (``release``), so that a waiter computes.

    A lease only ever saves work: whoever holds one computes the same deterministic output
    under the same name, so a lease that is lost, forged or doubly granted costs at worst a
    duplicate computation, never a wrong result.
    """

    function_id: str
    input_digest: str
    owner: str
    expires_at: float
    #: The stored version this lease was read or written as (a revision-checked write names it).
    revision: str

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return {"function_id": self.function_id, "input_digest": self.input_digest,
                "owner": self.owner, "expires_at": self.expires_at}


@dataclass
class FunctionStats:
    function: str
    records: int = 0  # records of outputs or results; negative records are counted apart
    failures: int = 0  # negative records (see Record.failure)
    hits: int = 0
    misses: int = 0
    saved_ms: float = 0.0
    saved_bytes: int = 0
    output_bytes: int = 0
    #: Calls that waited for identical work in flight instead of computing it (a lease).
    coalesced: int = 0
    #: Calls answered from a negative record (a known bad input, not read again).
    refused: int = 0
    #: Leases taken over from a holder that was killed or timed out.
    took_over: int = 0


class RecordStore(ABC):
    scheme: str = ""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, options: Mapping[str, str]) -> RecordStore:
        """Build the store from its URL and options (credentials come only from options)."""

    @abstractmethod
    def get(self, function_id: str, input_digest: str) -> Record | None:
        """The record for this identity and input, or None."""

    @abstractmethod
    def put(self, record: Record) -> tuple[Record, bool]:
        """Insert *record* unless one with its id exists.

        Returns (the stored record, True if this call created it). A concurrent writer of the
        same id is not an error: the loser gets the winner's record.
        """

    @abstractmethod
    def put_many(self, records: Iterable[Record]) -> int:
        """Insert every record of *records* whose id is absent, as :meth:`put` would, in bulk
        (a migration of records, a benchmark's load): one transaction or a few large
        requests instead of one round trip per record. A record whose id exists (stored
        before, or earlier in *records*) is left as it is. Returns how many were created.

        A failure raises StoreError, never a short count: SQLite then keeps none of the
        records (one transaction); CouchDB, whose requests commit one by one, writes every
        record it accepts and then names the ones it refused.
        """

    @abstractmethod
    def records_of_digest(self, input_digest: str) -> list[Record]:
        """Every record of this input, under any identity (``owdedup explain``: why a lookup
        missed). Not for the hot path: a scan where the store has no index by digest."""

    @abstractmethod
    def delete(self, function_id: str, input_digest: str) -> None:
        """Remove a record (used when its output object has vanished)."""

    @abstractmethod
    def add_counts(
        self, function: str, *, hits: int = 0, misses: int = 0, saved_ms: float = 0.0,
        saved_bytes: int = 0, coalesced: int = 0, refused: int = 0, took_over: int = 0,
    ) -> None:
        """Add to the per-function counters (never touches the records themselves)."""

    @abstractmethod
    def stats(self) -> list[FunctionStats]:
        """Per-function record counts and counters."""

    # -- leases (see Lease) ----------------------------------------------------------------

    @abstractmethod
    def get_lease(self, function_id: str, input_digest: str) -> Lease | None:
        """The lease on this record key (expired or not), or None."""

    @abstractmethod
    def claim(self, function_id: str, input_digest: str, owner: str,
              expires_at: float) -> tuple[Lease, bool]:
        """Claim the key for *owner* until *expires_at* with a create-if-absent write.

        Returns (the lease now held, True if *owner* holds it). Of several concurrent
        claimants exactly one gets True; the others get the winner's lease. A lease that
        exists is never replaced here, even when it has expired: see :meth:`take_over`.
        """

    @abstractmethod
    def take_over(self, stale: Lease, owner: str, expires_at: float) -> tuple[Lease, bool]:
        """Replace *stale* (an expired lease, as read) by one of *owner*'s, with a write
        that succeeds only if the stored lease is still *stale*'s revision. Of several
        waiters taking over the same lease exactly one gets True; the others get the lease
        as it now is. If *stale* is gone, this is a :meth:`claim`."""

    @abstractmethod
    def renew(self, lease: Lease, expires_at: float) -> Lease | None:
        """Extend *lease* (held by its owner) to *expires_at*; None if it is no longer that
        lease (taken over after it expired, or released)."""

    @abstractmethod
    def release(self, lease: Lease) -> None:
        """Remove *lease* if it is still that revision (a lease since taken over by another
        is left alone): the owner is done, or failed and lets a waiter compute."""

    def claim_or_take_over(self, function_id: str, input_digest: str, owner: str,
                           expires_at: float, now: float) -> tuple[Lease, bool]:
        """:meth:`claim`, and if the lease found has expired (at *now*), :meth:`take_over`."""
        lease, mine = self.claim(function_id, input_digest, owner, expires_at)
        if not mine and lease.expired(now):
            return self.take_over(lease, owner, expires_at)
        return lease, mine

    def get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Record]:
        """Records for several (function_id, input_digest) pairs; missing ones are absent."""
        found: dict[tuple[str, str], Record] = {}
        for function_id, digest in keys:
            record = self.get(function_id, digest)
            if record is not None:
                found[(function_id, digest)] = record
        return found

    def describe(self) -> str:
        return self.scheme

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections."""
