"""The functions owdedup can deduplicate: one protocol, one module per function, a registry.

    function = get_function("thumbnail")        # ConfigError naming the choices if unknown
    params = function.normalise({"sizes": "64,256"})
    variants = function.variants(params)        # identity + output name of each output

A function implements :class:`~owdedup.runtime.functions.base.DedupFunction`; it is
registered by name as a ``"module:Class"`` target, imported (and checked) when first asked
for, so an action imports only the function it runs. Built in: ``thumbnail``. More come
from :func:`FunctionRegistry.register` or, for every process of a run (``map``'s workers
too), from ``OWDEDUP_FUNCTIONS=name=module:Class[,...]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from owdedup.runtime import env as env_names
from owdedup.runtime.errors import ConfigError
from owdedup.runtime.functions.base import (
    DedupFunction,
    FunctionParams,
    Produced,
    Variant,
    identity_of,
)

# runtime/thumbnail.py imports its defaults from here, and that file's bytes are the
# thumbnail's identity: keep the names importable from this package.
from owdedup.runtime.functions.thumbnail import (
    DEFAULT_MAX_MEMORY_MB,
    DEFAULT_MAX_PIXELS,
    DEFAULT_QUALITY,
)
from owdedup.runtime.registry import check_target, import_target

__all__ = [
    "DEFAULT_FUNCTION", "DEFAULT_MAX_MEMORY_MB", "DEFAULT_MAX_PIXELS", "DEFAULT_QUALITY",
    "DedupFunction", "FunctionParams", "FunctionRegistry", "Produced", "Variant",
    "get_function", "identity_of", "registry", "sequence_of",
]

#: The function of a job that names none: invocations written before there were others.
DEFAULT_FUNCTION = "thumbnail"
#: A function name: it becomes an action name, a sequence name and an output-key folder.
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,40}")
_TUPLE_ATTRIBUTES = ("libraries", "parameters", "requirements")
#: Parameters of the job itself: a function cannot claim them.
RESERVED_PARAMETERS = frozenset({
    "bucket", "key", "dest_bucket", "function", "materialize", "digest", "input_bytes",
    "digest_source", "outputs", "compute_ms", "status", "recorded", "copies",
    "coalesced", "waited_ms", "took_over",
    "store", "records", "sequence",
})


class FunctionRegistry:
    """Functions by name. Each target is imported and validated once, when first used."""

    def __init__(self, builtins: Mapping[str, str], environ: Mapping[str, str] | None = None):
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, DedupFunction[Any]] = {}
        self._environ = environ
        self._from_environ_done = False
        for name, target in builtins.items():
            self.register(name, target)

    def register(self, name: str, target: str | DedupFunction[Any]) -> None:
        """Register *target* (``"module:Class"``, or an instance) as *name*. Registering a
        name again with another target is an error: two codes under one name would share
        records."""
        if not _NAME.fullmatch(name):
            raise ConfigError(f"bad function name {name!r}: lowercase letters, digits, - and _")
        if isinstance(target, str):
            check_target(target)
            known = self._targets.get(name)
            if known is not None and known != target:
                raise ConfigError(f"function {name!r} is already registered as {known}")
            self._targets[name] = target
            return
        if name in self._targets or self._loaded.get(name, target) is not target:
            raise ConfigError(f"function {name!r} is already registered")
        self._loaded[name] = _checked(name, target, type(target).__name__)

    def names(self) -> list[str]:
        self._read_environ()
        return sorted({*self._targets, *self._loaded})

    def targets(self) -> list[str]:
        """Every ``module:Class`` registered by name (the zip planner ships them)."""
        self._read_environ()
        return sorted(set(self._targets.values()))

    def get(self, name: str) -> DedupFunction[Any]:
        self._read_environ()
        function = self._loaded.get(name)
        if function is not None:
            return function
        target = self._targets.get(name)
        if target is None:
            raise ConfigError(
                f"unknown function {name!r}; choose one of: {', '.join(self.names())}"
            )
        loaded = import_target(target)
        instance = loaded() if isinstance(loaded, type) else loaded
        function = self._loaded[name] = _checked(name, instance, target)
        return function

    def all(self) -> list[DedupFunction[Any]]:
        return [self.get(name) for name in self.names()]

    def _read_environ(self) -> None:
        if self._from_environ_done:
            return
        self._from_environ_done = True
        environ = os.environ if self._environ is None else self._environ
        for entry in environ.get(env_names.FUNCTIONS, "").split(","):
            if not entry.strip():
                continue
            name, sep, target = entry.strip().partition("=")
            if not sep:
                raise ConfigError(
                    f"{env_names.FUNCTIONS}: {entry.strip()!r} is not name=module:Class")
            self.register(name.strip(), target.strip())


def _checked(name: str, function: object, where: str) -> DedupFunction[Any]:
    """*function* if it implements the protocol under *name*; else an error saying why."""
    if not isinstance(function, DedupFunction):
        missing = [member for member in ("name", "code_module", *_TUPLE_ATTRIBUTES,
                                         "normalise", "variants", "check_input", "compute")
                   if not hasattr(function, member)]
        raise ConfigError(f"{where} is not a DedupFunction (missing {', '.join(missing)})")
    if function.name != name:
        raise ConfigError(f"{where} is named {function.name!r}, registered as {name!r}")
    if not isinstance(function.code_module, str) or not function.code_module:
        raise ConfigError(f"{where}: code_module must name the module of its code")
    for attribute in _TUPLE_ATTRIBUTES:
        value = getattr(function, attribute)
        if not (isinstance(value, tuple) and all(isinstance(v, str) and v for v in value)):
            raise ConfigError(f"{where}: {attribute} must be a tuple of names")
    claimed = sorted(RESERVED_PARAMETERS.intersection(function.parameters))
    if claimed:
        raise ConfigError(f"{where}: parameters {', '.join(claimed)} belong to the job")
    return function


registry = FunctionRegistry({"thumbnail": "owdedup.runtime.functions.thumbnail:ThumbnailFunction"})


def sequence_of(name: str) -> str:
    """The sequence that runs function *name*: hash, lookup, *name* (its compute action),
    record."""
    return f"dedup-{name}"


def get_function(name: str) -> DedupFunction[Any]:
    """The registered function *name*; ``ConfigError`` naming the choices if there is none."""
    return registry.get(name)
