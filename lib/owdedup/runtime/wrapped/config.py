"""A wrapper's own configuration: the ``owdedup_*`` parameters, kept apart from the call's.

The conductor receives its configuration as bound parameters (``owdedup wrap`` binds them;
mark them ``final`` so that no invoker overrides them), all named with the reserved prefix
``owdedup_``:

==========================  ===========================================================
``owdedup_action``          the wrapped action (``[/namespace/][package/]name``)
``owdedup_objects``         object references, ``bucket/key[,src_bucket/src_key...]``
                            (default ``bucket/key``; ``-`` for none)
``owdedup_ignore``          parameters that do not affect the output (never hashed, stored)
``owdedup_version``         a version string pinned by the user (no definition is read)
``owdedup_no_metadata``     true: a result comes back without the ``owdedup`` key
``owdedup_store``,          where objects and records are, with their options
``owdedup_records``,        (``owdedup_store_secret_key``, ``owdedup_records_password``...),
``owdedup_store_*``,        as :class:`owdedup.runtime.config.Settings` reads them
``owdedup_records_*``
``owdedup_state``           set by the conductor itself between its two activations
==========================  ===========================================================

Every ``owdedup_*`` parameter is removed before the wrapped action sees the call, and none is
ever part of a key, a record, a result or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from owdedup.runtime.config import Settings
from owdedup.runtime.errors import ConfigError
from owdedup.runtime.wrapped.keying import ObjectParam, names_of, parse_objects

PREFIX = "owdedup_"
ACTION = PREFIX + "action"
OBJECTS = PREFIX + "objects"
IGNORE = PREFIX + "ignore"
VERSION = PREFIX + "version"
NO_METADATA = PREFIX + "no_metadata"
STATE = PREFIX + "state"
STORE = PREFIX + "store"
RECORDS = PREFIX + "records"


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in
                             ("1", "true", "yes", "on"))


def call_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The call's own parameters: everything but the reserved ``owdedup_*`` ones."""
    return {k: v for k, v in params.items() if not str(k).startswith(PREFIX)}


@dataclass(frozen=True)
class WrapConfig:
    action: str
    objects: tuple[ObjectParam, ...]
    ignore: tuple[str, ...]
    version: str
    metadata: bool
    #: Where the stores are; holds credentials (never in repr).
    settings: Settings = field(repr=False)

    @classmethod
    def from_params(cls, params: Mapping[str, Any],
                    environ: Mapping[str, str] | None = None) -> WrapConfig:
        action = params.get(ACTION)
        if not isinstance(action, str) or not action.strip():
            raise ConfigError(f"no wrapped action: bind the parameter {ACTION} "
                              "(owdedup wrap does)")
        own = {k[len(PREFIX):]: v for k, v in params.items() if str(k).startswith(PREFIX)}
        return cls(
            action=action.strip(),
            objects=parse_objects(params.get(OBJECTS)),
            ignore=names_of(params.get(IGNORE)),
            version=str(params.get(VERSION) or "").strip(),
            metadata=not is_true(params.get(NO_METADATA)),
            settings=Settings.resolve(own, environ),
        )

    @property
    def function(self) -> str:
        """The name records and counters are kept under: ``[package/]action``."""
        name = self.action.strip("/")
        return name.split("/", 1)[1] if self.action.startswith("/") and "/" in name else name

    def secrets(self) -> tuple[str, ...]:
        return tuple(v for _, v in (*self.settings.store_options,
                                    *self.settings.records_options) if v)
