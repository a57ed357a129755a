"""SRC and DEST of ``map``/``invoke`` as a user of a folder tool writes them.

Two spellings:

- store names, as today: ``photos``, ``photos/2024`` (bucket, then prefix or key) in the
  configured store (``--store``/``OWDEDUP_STORE``, else a folder store at the current folder);
- folder paths, absolute or relative: ``/data/photos``, ``./photos``, ``../photos/2024``. A path
  names a folder of the folder store: the bucket is its first folder below the store root.
  With no store configured, the root is DEST's parent folder (DEST is a bucket, so it sits
  directly in the root), and SRC must lie inside that root too; with a folder store
  configured, both must lie inside its root. A plain name beside a path is a path relative to
  the current folder, which is what it means for the default store anyway.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from owdedup.runtime.config import ENV_STORE
from owdedup.runtime.errors import ConfigError
from owdedup.runtime.stores import open_store
from owdedup.runtime.stores.folder import FolderStore


@dataclass(frozen=True)
class Locations:
    bucket: str
    rest: str  # the prefix (map) or the key (invoke) inside *bucket*
    dest_bucket: str
    env: dict[str, str]  # the environment, with the store root that the paths imply


def is_path(arg: str) -> bool:
    """A folder path rather than a store name: absolute, or starting with . or .."""
    first = arg.replace(os.sep, "/").split("/", 1)[0]
    return Path(arg).is_absolute() or first in (".", "..")


def resolve(source: str, dest: str, env: Mapping[str, str], *, key: bool) -> Locations:
    """Where *source* and *dest* are; *key*: SOURCE names one object (``invoke``), else a
    bucket with an optional prefix (``map``)."""
    if not (is_path(source) or is_path(dest)):
        bucket, _, rest = source.partition("/")
        return Locations(bucket, rest, dest, dict(env))
    configured = env.get(ENV_STORE)
    if configured:
        store = open_store(configured)
        if not isinstance(store, FolderStore):
            raise ConfigError(f"folder paths need the folder store; in {store.describe()} "
                              "give SRC and DEST as BUCKET[/PREFIX] and BUCKET")
        root = store.root
    else:
        root = Path(dest).resolve().parent
    src_parts = _inside(root, Path(source), "SRC")
    dest_parts = _inside(root, Path(dest), "DEST")
    if len(dest_parts) != 1:
        raise ConfigError(f"DEST {dest!r} must be a folder directly inside the store root "
                          f"{root}")
    rest = "/".join(src_parts[1:])
    if key and not rest:
        raise ConfigError(f"SOURCE {source!r} must be a file inside a folder of {root}")
    if not key and rest and Path(source).is_dir():
        rest += "/"  # the folder's objects, not every name that merely starts with it
    return Locations(src_parts[0], rest, dest_parts[0], {**env, ENV_STORE: root.as_uri()})


def _inside(root: Path, path: Path, what: str) -> tuple[str, ...]:
    resolved = path.resolve()
    try:
        parts = resolved.relative_to(root).parts
    except ValueError:
        raise ConfigError(f"{what} {str(path)!r} is outside the store root {root}") from None
    if not parts:
        raise ConfigError(f"{what} {str(path)!r} is the store root {root}: name a folder in it")
    return parts
