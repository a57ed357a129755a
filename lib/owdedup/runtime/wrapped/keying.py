"""What a call of a wrapped function is keyed by: its objects' content and its other parameters.

The key of a call is a record id, (function identity, input digest):

* the *input digest* is the SHA-256 of the one declared object's content (so the same bytes
  under any name deduplicate, and the digest is the one the thumbnail's records use), or, for
  several declared objects, the SHA-256 of the canonical JSON of their digests by reference;
* the *function identity* is the SHA-256 of the canonical JSON of the wrapped function's
  fingerprint (its version: :mod:`owdedup.runtime.wrapped.identity`), the declared object
  references, and every other parameter but those declared as not affecting the output.

A declared object reference is a pair of parameters naming a bucket and a key
(``bucket/key`` by default, ``src_bucket/src_key`` ...). Parameters declared as not affecting
the output (``dest_bucket``, an endpoint, a credential) are dropped before anything is
hashed or stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from owdedup.runtime.digest import canonical_json, hash_canonical
from owdedup.runtime.errors import ConfigError, NotFoundError
from owdedup.runtime.stores import ObjectStore

KEY_SCHEMA = 1


@dataclass(frozen=True)
class ObjectParam:
    """A declared object reference: the names of the parameters holding bucket and key."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{self.bucket}/{self.key}"

    @classmethod
    def parse(cls, text: str) -> ObjectParam:
        bucket, sep, key = text.strip().partition("/")
        if not sep or not bucket or not key or "/" in key:
            raise ConfigError(f"object reference {text!r} must be BUCKET_PARAM/KEY_PARAM, "
                              "e.g. bucket/key or src_bucket/src_key")
        return cls(bucket, key)


DEFAULT_OBJECTS = (ObjectParam("bucket", "key"),)


def names_of(value: Any) -> tuple[str, ...]:
    """A list of names given as a list or a comma-separated string ("" or None: none)."""
    if value is None or value == "":
        return ()
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise ConfigError(f"expected a list of names, not {value!r}")
    return tuple(str(item).strip() for item in items if str(item).strip())


def parse_objects(value: Any) -> tuple[ObjectParam, ...]:
    """The declared object references: ``None`` is the default ``bucket/key``; an empty
    list (or ``"-"``) declares none (a pure function of its parameters)."""
    if value is None or value == "":
        return DEFAULT_OBJECTS
    if value == "-":
        return ()
    objects = tuple(ObjectParam.parse(name) for name in names_of(value))
    taken = [name for o in objects for name in (o.bucket, o.key)]
    if len(set(taken)) != len(taken):
        raise ConfigError(f"object references {', '.join(map(str, objects))} share a parameter")
    return objects


@dataclass(frozen=True)
class CallKey:
    """The record id of one call, and what the record keeps of it."""

    function: str
    function_id: str
    input_digest: str
    input_bytes: int
    #: The names of the parameters the identity covers (object references and ignored
    #: ones left out). Their values are hashed, never kept: a value the user did not
    #: declare as a credential may still be one.
    param_names: tuple[str, ...]
    #: "bucket/key" as given -> content SHA-256, for messages and the metadata.
    objects: dict[str, str]


def object_names(params: Mapping[str, Any], objects: Sequence[ObjectParam],
                 function: str) -> list[tuple[ObjectParam, str, str]]:
    """(reference, bucket, key) of each declared object in *params*; a missing or non-text
    one is a ``ConfigError`` naming the function and the parameter."""
    found = []
    for ref in objects:
        values = []
        for name in (ref.bucket, ref.key):
            value = params.get(name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{function}: missing parameter {name!r} (object reference "
                                  f"{ref}): give the object's {name} as text")
            values.append(value)
        found.append((ref, values[0], values[1]))
    return found


def output_params(params: Mapping[str, Any], objects: Sequence[ObjectParam],
                  ignore: Iterable[str], function: str) -> dict[str, Any]:
    """The parameters that shape the output: all but the object references and *ignore*,
    each checked to be JSON (a parameter that is not is named in the error)."""
    dropped = set(ignore) | {name for ref in objects for name in (ref.bucket, ref.key)}
    kept = {}
    for name, value in params.items():
        if name in dropped:
            continue
        try:
            canonical_json(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{function}: parameter {name!r} is not JSON ({type(value).__name__}: {exc}); "
                "declare it as not affecting the output or pass JSON") from None
        kept[str(name)] = value
    return kept


def key_call(
    params: Mapping[str, Any], *, function: str, fingerprint: str,
    objects: Sequence[ObjectParam], ignore: Iterable[str], store: ObjectStore | None,
) -> CallKey:
    """Hash the declared objects (checksum HEAD, else streamed) and key the call."""
    named = object_names(params, objects, function)
    kept = output_params(params, objects, ignore, function)
    digests: dict[str, str] = {}
    total = 0
    for ref, bucket, key in named:
        if store is None:
            raise ConfigError(f"{function}: no object store to read {bucket}/{key} from")
        try:
            info, digest, _ = store.content_sha256(bucket, key)
        except NotFoundError as exc:
            raise NotFoundError(f"{function}: object {bucket}/{key} (parameters {ref}) "
                                f"cannot be read: {exc}", key=None) from None
        digests[f"{bucket}/{key}"] = digest
        total += info.size
    by_reference = {str(ref): digests[f"{bucket}/{key}"] for ref, bucket, key in named}
    if len(by_reference) == 1:
        input_digest = next(iter(by_reference.values()))
    else:
        input_digest = hash_canonical({"schema": KEY_SCHEMA, "objects": by_reference})
    function_id = hash_canonical({
        "schema": KEY_SCHEMA, "function": fingerprint,
        "objects": [str(ref) for ref in objects], "params": kept,
    })
    return CallKey(function, function_id, input_digest, total, tuple(sorted(kept)), digests)
