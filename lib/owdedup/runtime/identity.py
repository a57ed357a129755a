"""Function identity: everything that can change a function's output, hashed.

Normalise, then hash (as joblib does): the identity is the SHA-256 of the canonical JSON of
the function's name, the digest of its code, its output-affecting parameters after
normalisation, and the versions of the libraries it computes with. Changing any of them gives
a new identity, so old records are never hit for a new version: they are simply not found.

The code digest is taken from the module's source file, read as bytes without importing the
module, so the hit-path actions can compute it without importing Pillow. Library versions come
from a ``_pins.json`` written into the package at build time (the hit-path action zips do not
carry Pillow, so they cannot ask for its version), else from the installed distribution.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from owdedup.runtime.digest import hash_canonical
from owdedup.runtime.errors import ConfigError

IDENTITY_SCHEMA = 1
_PINS_FILE = Path(__file__).with_name("_pins.json")


@cache
def code_digest(module: str) -> str:
    """SHA-256 of *module*'s source file, found without importing the module itself."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ConfigError(f"cannot find the source of {module}")
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


@cache
def _pinned_versions() -> dict[str, str]:
    try:
        data = json.loads(_PINS_FILE.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable {_PINS_FILE.name}: {exc}") from exc
    return {str(k).lower(): str(v) for k, v in data.items()}


@cache
def library_version(distribution: str) -> str:
    """The version of *distribution* that computes the outputs."""
    pinned = _pinned_versions().get(distribution.lower())
    if pinned:
        return pinned
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"{distribution} is not installed and no version is pinned for it; "
            "the function identity cannot be computed"
        ) from None


#: The parts of the identities this process computed, by identity (``owdedup explain``
#: and the records it reads them from): one entry per variant in use, a handful.
_PARTS: dict[str, dict[str, Any]] = {}


def function_identity(
    name: str, module: str, libraries: tuple[str, ...], params: Mapping[str, Any]
) -> str:
    """The identity of *name* computed by *module* with *libraries* on normalised *params*."""
    parts = {
        "schema": IDENTITY_SCHEMA,
        "function": name,
        "code": code_digest(module),
        "libraries": {lib: library_version(lib) for lib in libraries},
        "params": dict(params),
    }
    identity = hash_canonical(parts)
    _PARTS.setdefault(identity, parts)
    return identity


def identity_parts(identity: str) -> dict[str, Any] | None:
    """What *identity* was computed from (code digest, library versions, parameters), if
    this process computed it; kept in records so that a miss can be explained."""
    parts = _PARTS.get(identity)
    return None if parts is None else json.loads(json.dumps(parts))
