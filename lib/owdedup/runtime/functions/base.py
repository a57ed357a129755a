"""What a deduplicated function is: the :class:`DedupFunction` protocol and its variants.

A function here is pure: its output depends only on the input bytes, the function's code,
its normalised output-affecting parameters and the versions of the libraries it runs on.
Each request yields one or more *variants* (for thumbnails: one per size); each variant has
its own identity, its own deterministic output name and its own record, so no two variants
of one request may share an identity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from owdedup.runtime.identity import function_identity


@dataclass(frozen=True)
class Variant:
    """One output of a request: its label, identity and deterministic output key."""

    label: str  # unique within a request; names the output (and its materialised copy)
    size: int  # reported as the output's "size": the box size for thumbnails, else 0
    function_id: str
    extension: str
    #: What the record keeps to describe this output (informative, not part of any key).
    summary: Mapping[str, Any] = field(default_factory=dict)

    def output_key(self, function: str, input_digest: str) -> str:
        # (function identity, input digest) -> one name: concurrent misses of the same content
        # write the same object, so no orphan can be left behind.
        return f"{function}/{self.label}/{self.function_id}/{input_digest}{self.extension}"


@dataclass(frozen=True)
class Produced:
    """What :meth:`DedupFunction.compute` made for one variant."""

    data: bytes
    content_type: str
    width: int = 0  # for images; 0 otherwise
    height: int = 0


class FunctionParams(Protocol):
    """A function's normalised parameters: what travels in the job after ``hash``."""

    def to_dict(self) -> dict[str, Any]: ...


P = TypeVar("P", bound=FunctionParams)


@runtime_checkable
class DedupFunction(Protocol[P]):
    """A function owdedup deduplicates. Register an implementation by name in
    :data:`owdedup.runtime.functions.registry`; the job, the pipeline, the local engine and
    the zip planner take everything they need from it.

    Importing the implementation's module must stay cheap: the hit-path actions (``hash``,
    ``lookup``, ``record``) use it for parameters and identities and must not import what
    :meth:`compute` needs (import that inside ``compute``).
    """

    # Read-only members: an implementation sets them as plain class attributes.

    @property
    def name(self) -> str:
        """Registry key; names its compute action, its sequence ``dedup-<name>``, its
        outputs' folder."""
        ...

    @property
    def code_module(self) -> str:
        """The module whose source bytes are hashed into the identity (never imported for
        it): keep everything that shapes the output in it, and nothing else."""
        ...

    @property
    def libraries(self) -> tuple[str, ...]:
        """Distributions whose versions are part of the identity."""
        ...

    @property
    def parameters(self) -> tuple[str, ...]:
        """The job parameters that belong to this function: nothing else of an invocation's
        parameters reaches it, so bound credentials never travel in a job."""
        ...

    @property
    def requirements(self) -> tuple[str, ...]:
        """Third-party distributions its compute action's zip carries (beyond the store
        client)."""
        ...

    def normalise(self, params: Mapping[str, Any]) -> P:
        """Check and canonicalise; a bad parameter raises ``ConfigError``. An empty value
        means "not given" (manifest inputs bound to unset variables arrive as "")."""
        ...

    def variants(self, params: P) -> list[Variant]:
        """The outputs one request makes, each with its identity (see :func:`identity_of`)."""
        ...

    def check_input(
        self, read_prefix: Callable[[int], bytes], size: int, params: P, *, name: str
    ) -> None:
        """Refuse, before the body is read, an input the function would refuse anyway
        (``BadInputError`` naming *name*), from its *size* and at most a prefix of it
        (``read_prefix(n)``: its first n bytes or fewer). Do nothing when there is nothing to
        judge early. Called on a miss only, like :meth:`compute`."""
        ...

    def compute(self, data: bytes, params: P, *, name: str) -> Mapping[str, Produced]:
        """Every variant's output from the input bytes, by variant label. Bad input raises
        ``BadInputError`` naming *name* (the input's key)."""
        ...


def identity_of(function: DedupFunction[Any], params: Mapping[str, Any]) -> str:
    """The identity of one variant of *function* made with these output-affecting *params*."""
    return function_identity(function.name, function.code_module, function.libraries, params)
