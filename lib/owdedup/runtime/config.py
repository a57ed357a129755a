"""Where the stores are: resolved from action parameters first, then the environment.

Credentials travel the same way (``store_secret_key`` parameter or
``OWDEDUP_STORE_SECRET_KEY``), are handed to the backends as options, and are never copied
into results, records or log lines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from owdedup.runtime import env as env_names

DEFAULT_STORE = "file://."
DEFAULT_RECORDS = "sqlite://.owdedup/records.sqlite"

ENV_STORE = env_names.STORE
ENV_RECORDS = env_names.RECORDS
ENV_OUT_BUCKET = env_names.OUT_BUCKET
_OPTION_PREFIXES = {"store": env_names.STORE_OPTION_PREFIX,
                    "records": env_names.RECORDS_OPTION_PREFIX}
_ENV_PREFIXES = tuple(_OPTION_PREFIXES.values())


@dataclass(frozen=True)
class Settings:
    store_url: str
    records_url: str
    # Credentials live here (access/secret keys, passwords): never in repr(Settings/Context).
    store_options: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    records_options: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def resolve(
        cls, params: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> Settings:
        env = os.environ if environ is None else environ
        from_env = _env_options(env)
        return cls(
            store_url=str(params.get("store") or env.get(ENV_STORE) or DEFAULT_STORE),
            records_url=str(params.get("records") or env.get(ENV_RECORDS) or DEFAULT_RECORDS),
            store_options=_options("store", params, from_env["store"]),
            records_options=_options("records", params, from_env["records"]),
        )


def _env_options(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``OWDEDUP_<PREFIX>_<NAME>`` variables as {prefix: {name: value}}.

    Every action resolves its settings, so this runs once per activation: one pass over the
    names, reading the value of the few that match (``os.environ`` decodes each name and
    each value it hands out; reading them all, twice, was a third of the Python time of a
    ``map`` step).
    """
    found: dict[str, dict[str, str]] = {prefix: {} for prefix in _OPTION_PREFIXES}
    for name in env:
        if name.startswith(_ENV_PREFIXES):
            for prefix, env_prefix in _OPTION_PREFIXES.items():
                if name.startswith(env_prefix):
                    found[prefix][name[len(env_prefix):].lower()] = env[name]
    return found


def _options(
    prefix: str, params: Mapping[str, Any], from_env: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """``<prefix>_<name>`` parameters over the ``OWDEDUP_<PREFIX>_<NAME>`` variables."""
    found = dict(from_env)
    for name, value in params.items():
        if name.startswith(prefix + "_") and value not in (None, ""):
            found[name[len(prefix) + 1:]] = str(value)
    return tuple(sorted(found.items()))
