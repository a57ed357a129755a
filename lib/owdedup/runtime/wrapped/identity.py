"""The version fingerprint of a function we did not write: what its records are keyed by.

* An OpenWhisk action, from its own definition read through the REST API (the conductor has
  ``provide-api-key``): its kind, main, image, the SHA-256 of its code (source or zip, as the
  API returns it), its bound parameters at action and package level, minus the parameters
  declared as not affecting the output (credentials, endpoints), which are never hashed nor
  stored. A sequence is fingerprinted by its components', in order. Updating the code or a
  bound parameter changes the fingerprint, so the next call is a miss, never a stale hit.
* A Python file run locally (or a module a decorator wraps): the SHA-256 of its source, the
  Python version, and the versions of the packages it declares.
* A pinned version string (``owdedup wrap --version V``): the user's word, nothing fetched.

Every call reads the action's definition without its code (``?code=false``: small), so a
change is seen at once; the code itself is read and hashed once per action version in a
warm container (the digest is cached by the action's version and update time).
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from owdedup.runtime import env as env_names
from owdedup.runtime.digest import hash_canonical
from owdedup.runtime.errors import ConfigError, NotFoundError, StoreError
from owdedup.runtime.identity import library_version
from owdedup.runtime.platform import get_entity
from owdedup.runtime.wrapped.config import PREFIX

FINGERPRINT_SCHEMA = 1
#: How deep sequences of sequences are followed.
MAX_DEPTH = 8

class Fetch(Protocol):
    def __call__(self, path: str, env: Mapping[str, str], purpose: str) -> dict[str, Any] | None:
        """GET one entity of the REST API (``owdedup.runtime.platform.get_entity``)."""


#: (namespace, action, version, updated) -> SHA-256 of the code: one fetch per version.
_CODE_DIGESTS: dict[tuple[str, str, str, str], str] = {}
#: Entries kept at most (a warm container sees few versions; this only bounds a long life).
MAX_CACHED_VERSIONS = 256


def qualified(name: str, env: Mapping[str, str]) -> tuple[str, str]:
    """``/ns/pkg/a`` -> (``ns``, ``pkg/a``); ``pkg/a`` or ``a`` -> (this namespace, ...)."""
    text = name.strip()
    if text.startswith("/"):
        namespace, _, relative = text[1:].partition("/")
    else:
        namespace, relative = env.get(env_names.OW_NAMESPACE) or "_", text
    if not namespace or not relative or relative.count("/") > 1 or "" in relative.split("/"):
        raise ConfigError(f"{name!r} is not an action name ([/namespace/][package/]action)")
    return namespace, relative


def fully_qualified(name: str, env: Mapping[str, str]) -> str:
    """The name a conductor's continuation must give: ``/namespace/[package/]action``."""
    namespace, relative = qualified(name, env)
    return f"/{namespace}/{relative}"


def pinned_fingerprint(function: str, version: str) -> str:
    return hash_canonical({"schema": FINGERPRINT_SCHEMA, "function": function,
                           "pinned": version})


#: PEP 723 inline script metadata: ``# /// script`` ... ``# ///``.
_SCRIPT_BLOCK = re.compile(
    r"(?m)^# /// script\s*$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def declared_packages(source: bytes, name: str = "the file") -> tuple[str, ...]:
    """The distributions a Python file declares in its PEP 723 block
    (``# /// script`` / ``# dependencies = ["numpy>=2"]`` / ``# ///``), by name."""
    match = _SCRIPT_BLOCK.search(source.decode("utf-8", errors="replace"))
    if match is None:
        return ()
    import tomllib  # only for files that declare packages
    toml = "".join(line[2:] if line.startswith("# ") else line[1:]
                   for line in match["content"].splitlines(keepends=True))
    try:
        dependencies = tomllib.loads(toml).get("dependencies", [])
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: its '# /// script' block is not TOML: {exc}") from None
    names = []
    for item in dependencies if isinstance(dependencies, list) else []:
        found = _REQUIREMENT_NAME.match(str(item))
        if found:
            names.append(found[1])
    return tuple(names)


def python_fingerprint(source: Path, packages: Iterable[str] = ()) -> str:
    """A Python file's (or module's) source digest, the Python version and the versions of
    the packages it declares (its PEP 723 block) and of *packages*."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from None
    declared = {*declared_packages(data, str(source)), *packages}
    return hash_canonical({
        "schema": FINGERPRINT_SCHEMA, "code": hashlib.sha256(data).hexdigest(),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "packages": {name: library_version(name) for name in sorted(declared)},
    })


def _parameters(doc: Mapping[str, Any], ignore: frozenset[str]) -> dict[str, Any]:
    """Bound parameters but the ignored ones and the wrapper's own (``owdedup_*``: its store
    credentials, should a package bind them to the wrapped action too)."""
    pairs = doc.get("parameters") or []
    return {str(p["key"]): p.get("value") for p in pairs
            if isinstance(p, dict) and "key" in p and str(p["key"]) not in ignore
            and not str(p["key"]).startswith(PREFIX)}


class _OncePerCall:
    """*fetch*, each path read once per fingerprint (a sequence's components share their
    package), safe to call from the threads that read components at once."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self._read: dict[str, dict[str, Any] | None] = {}

    def __call__(self, path: str, env: Mapping[str, str], purpose: str) -> dict[str, Any] | None:
        if path not in self._read:
            self._read[path] = self.fetch(path, env, purpose)  # a race only reads twice
        return self._read[path]


def action_fingerprint(name: str, env: Mapping[str, str], ignore: Iterable[str] = (),
                       *, fetch: Fetch = get_entity, depth: int = 0) -> str:
    """The fingerprint of action (or sequence) *name*, read through the REST API."""
    if depth == 0 and not isinstance(fetch, _OncePerCall):
        fetch = _OncePerCall(fetch)
    if depth > MAX_DEPTH:
        raise ConfigError(f"{name}: sequences nested deeper than {MAX_DEPTH}")
    ignored = frozenset(ignore)
    namespace, relative = qualified(name, env)
    purpose = f"cannot read the definition of the wrapped action {name}"
    base = quote(namespace, safe="")
    doc = fetch(f"{base}/actions/{quote(relative, safe='/')}?code=false", env, purpose)
    if doc is None:
        raise NotFoundError(f"the wrapped action {name} does not exist (namespace {namespace})")
    exec_ = doc.get("exec") if isinstance(doc.get("exec"), dict) else {}
    assert isinstance(exec_, dict)
    kind = str(exec_.get("kind", ""))
    package = relative.split("/")[0] if "/" in relative else ""
    package_params: dict[str, Any] = {}
    if package:
        package_doc = fetch(f"{base}/packages/{quote(package, safe='')}", env, purpose)
        package_params = _parameters(package_doc or {}, ignored)
    described: dict[str, Any] = {
        "schema": FINGERPRINT_SCHEMA, "kind": kind, "main": exec_.get("main"),
        "image": exec_.get("image"), "params": _parameters(doc, ignored),
        "package_params": package_params,
    }
    if kind == "sequence":
        described["components"] = _components(
            [str(c) for c in exec_.get("components") or []], env, ignored, fetch, depth + 1)
    else:
        version = (namespace, relative, str(doc.get("version", "")), str(doc.get("updated", "")))
        described["code"] = _code_digest(version, env, purpose, fetch)
    return hash_canonical(described)


def _components(names: list[str], env: Mapping[str, str], ignored: frozenset[str],
                fetch: Fetch, depth: int) -> list[str]:
    """The components' fingerprints, in order, read at once: a hit of a wrapped sequence
    waits for about one round trip per level, not one per component."""
    def one(component: str) -> str:
        return action_fingerprint(component, env, ignored, fetch=fetch, depth=depth)

    if len(names) <= 1:
        return [one(n) for n in names]
    from concurrent.futures import ThreadPoolExecutor  # only sequences need it

    with ThreadPoolExecutor(max_workers=min(len(names), 8)) as pool:
        return list(pool.map(one, names))


def _code_digest(version: tuple[str, str, str, str], env: Mapping[str, str],
                 purpose: str, fetch: Fetch) -> str:
    digest = _CODE_DIGESTS.get(version)
    if digest is None:
        namespace, relative = version[0], version[1]
        doc = fetch(f"{quote(namespace, safe='')}/actions/{quote(relative, safe='/')}",
                    env, purpose)
        if doc is None:
            raise NotFoundError(f"the wrapped action {relative} was deleted while it was read")
        exec_ = doc.get("exec") if isinstance(doc.get("exec"), dict) else {}
        assert isinstance(exec_, dict)
        code = exec_.get("code")
        text = code if isinstance(code, str) else ""
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        read = (namespace, relative, str(doc.get("version", "")), str(doc.get("updated", "")))
        if read != version:  # its parameters and its code would be of two versions
            raise StoreError(f"the wrapped action {relative} changed while it was read; "
                             "invoke again")
        if len(_CODE_DIGESTS) >= MAX_CACHED_VERSIONS:
            _CODE_DIGESTS.clear()
        _CODE_DIGESTS[version] = digest
    return digest
