"""The entities clients PUT to ``owdedup serve``: the engine's ``Catalog``, fed over REST.

Entities are kept as OpenWhisk's own JSON documents (``name``, ``version``, ``publish``,
``exec``, ``parameters``/``annotations`` as ``[{key, value}]``, ``limits``, ``updated``), one
namespace per catalog; action code lives beside them in a content-addressed code store. With a
state directory the documents are written to ``catalog.json`` (atomically, after every change)
and the code to ``code/``; without one, both live in a temporary directory. Bound parameters
(credentials among them) are in those documents: the state directory and its folders are
made 0700, its files 0600.

Name forms accepted wherever an entity is referenced: ``name``, ``pkg/name`` (relative to the
catalog's namespace), ``/ns/name`` and ``/ns/pkg/name`` (fully qualified; ``_`` is the
catalog's namespace), and ``/name`` (the engine's name for an action of the default package).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from owdedup.engine.conductor import ENTITY_NAME, SYSTEM_NAMESPACE, EntityPath
from owdedup.engine.executor import SEQUENCE_COMPONENT_MISSING, SEQUENCE_LIMIT
from owdedup.engine.manifest import ActionDef, Limits, RuleDef, SequenceDef, TriggerDef
from owdedup.runtime.atomic import private_dir, write_atomic
from owdedup.serve.errors import BadRequest, Conflict, EntityNotFound, TooLarge

DEFAULT_NAMESPACE = "guest"
BUILTIN_KIND = "builtin"
SEQUENCE_KIND = "sequence"
BLACKBOX_KIND = "blackbox"  # a Docker image: accepted, not runnable here

#: Kinds this server accepts, per runtime family; the first of each family's defaults list
#: is what ``<family>:default`` means. Python kinds run on the base interpreter, nodejs:20 on
#: the machine's node (:mod:`owdedup.actionloop`); blackbox is accepted, not run.
RUNTIME_KINDS: dict[str, tuple[str, ...]] = {
    "python": ("python:3.9", "python:3.10", "python:3.11", "python:3.12"),
    "nodejs": ("nodejs:20",),
}
DEFAULT_KINDS = {"python": "python:3.11", "nodejs": "nodejs:20"}
KNOWN_KINDS = frozenset(kind for kinds in RUNTIME_KINDS.values() for kind in kinds)

MB = 1024 * 1024
PARAMETERS_LIMIT = 1 * MB
CODE_LIMIT = 48 * MB
#: What a zip may unpack to. OpenWhisk caps the code itself (48 MB); the unpacked size is
#: bounded by the container's disk. Here it lands on the host, so a zip bomb (2 MB -> 2 GiB)
#: is refused: typical Python packages unpack to 2-4 times their zip, well under this.
UNPACKED_CODE_LIMIT = 256 * MB
#: The largest central directory (a zip's list of members) a code zip may have, checked
#: before it is parsed: parsing holds one object per member, and a 49 MB zip of 600,000
#: empty members took 286 MiB and 19 s of the server to list (then as many files to unpack).
#: A virtualenv with Pillow and minio lists a few thousand members in well under 1 MB.
CENTRAL_DIRECTORY_LIMIT = 4 * MB
_ECD_SIZE = 5  # where zipfile's end record keeps the central directory's size
#: (minimum, maximum, default) of each action limit, in OpenWhisk's units (ms, MB, MB), as
#: core's defaults (``whisk.memory.max`` 512 MB; ``owdedup serve --max-memory`` raises it).
LIMIT_RANGES: dict[str, tuple[int, int, int]] = {
    "timeout": (100, 300_000, 60_000), "memory": (128, 512, 256), "logs": (0, 10, 10),
    "concurrency": (1, 1, 1)}
#: How OpenWhisk's ``require`` words each limit out of range (TimeLimit, MemoryLimit, ...).
_LIMIT_WORDS = {"timeout": ("duration", "milliseconds"), "memory": ("memory", "MB"),
                "logs": ("log size", "MB"), "concurrency": ("concurrency", "")}

#: OpenWhisk's EntityName (at most 256 characters, checked apart).
_NAME = ENTITY_NAME
NAME_MAX = 256
ILLEGAL_NAME = "The name of the entity contains illegal characters."
_ZIP_BASE64_PREFIX = "UEsDB"  # base64 of a zip's "PK\x03\x04"

Doc = dict[str, Any]


def parse_name(text: str, namespace: str) -> EntityPath:
    """Any accepted name form -> its path; ``_`` stands for *namespace*."""
    parts = text.strip().split("/")
    if text.startswith("/"):
        parts = parts[1:]
        if len(parts) == 1:  # the engine's fqn of a default-package action: "/name"
            parts = [namespace, parts[0]]
        if len(parts) not in (2, 3):
            raise BadRequest(f"malformed name {text!r}")
        ns = namespace if parts[0] == "_" else parts[0]
        package, name = (parts[1], parts[2]) if len(parts) == 3 else ("", parts[1])
    else:
        if len(parts) not in (1, 2):
            raise BadRequest(f"malformed name {text!r}")
        ns = namespace
        package, name = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    for part in (ns, package, name) if package else (ns, name):
        if not _NAME.match(part):
            raise BadRequest(f"malformed name {text!r}")
    return EntityPath(ns, package, name)


def check_entity_name(name: str) -> None:
    """OpenWhisk's rule for an entity name (``.`` and ``..`` are not names)."""
    if len(name) > NAME_MAX:
        raise BadRequest(f"name longer than allowed: {len(name)} > {NAME_MAX}.")
    if not _NAME.match(name):
        raise BadRequest(ILLEGAL_NAME)


def central_directory_size(data: bytes) -> int | None:
    """The size of the central directory that ``zipfile`` would parse in *data*, read from
    its end record (zip64 included) by zipfile's own reader; None when there is none."""
    try:
        end_record = getattr(zipfile, "_EndRecData")(io.BytesIO(data))  # noqa: B009 - private
    except (zipfile.BadZipFile, OSError, ValueError):
        return None  # the parse that follows says what is wrong
    return None if not end_record else int(end_record[_ECD_SIZE])


def unpacked_size(archive: zipfile.ZipFile) -> int:
    """What extracting *archive* writes: the sizes its directory declares (extraction stops
    at a member's declared size, so a member cannot write more)."""
    return sum(member.file_size for member in archive.infolist())


def kv_dict(pairs: Iterable[Doc]) -> dict[str, Any]:
    return {str(pair["key"]): pair.get("value") for pair in pairs}


def kv_list(values: dict[str, Any]) -> list[Doc]:
    return [{"key": key, "value": value} for key, value in values.items()]


def is_true(value: Any) -> bool:
    """A boolean parameter or annotation as OpenWhisk's tools accept it: ``true`` or the
    string ``"true"`` (any case, surrounding blanks ignored)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def now_ms() -> int:
    return int(time.time() * 1000)


class CodeStore:
    """Action code by content digest: ``<sha256>.zip`` (binary) or ``<sha256>.py`` (source)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        private_dir(root)

    def path(self, digest: str, binary: bool) -> Path:
        return self.root / f"{digest}{'.zip' if binary else '.py'}"

    def put(self, data: bytes, binary: bool) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest, binary)
        if not target.exists():
            write_atomic(target, data)
        return digest

    def text(self, digest: str, binary: bool) -> str:
        """The code as OpenWhisk returns it: base64 for a zip, the source otherwise."""
        data = self.path(digest, binary).read_bytes()
        return base64.b64encode(data).decode("ascii") if binary else data.decode("utf-8")

    def keep_only(self, referenced: set[str]) -> list[str]:
        """Delete the code no action refers to; returns the digests deleted."""
        dropped = []
        for file in self.root.iterdir():
            if file.suffix in (".zip", ".py") and file.stem not in referenced:
                file.unlink(missing_ok=True)
                dropped.append(file.stem)
        return dropped


class ServeCatalog:
    """Packages, actions (and sequences), triggers and rules of one namespace."""

    COLLECTIONS = ("packages", "actions", "triggers", "rules")

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, state_dir: Path | None = None,
                 max_memory_mb: int | None = None) -> None:
        self.namespace = namespace
        low, high, default = LIMIT_RANGES["memory"]
        high = high if max_memory_mb is None else max_memory_mb
        if high < max(low, default):
            raise ValueError(f"the memory maximum must be at least {max(low, default)} MB")
        #: The action limits' ranges here: OpenWhisk's defaults, the memory maximum as set.
        self.limit_ranges = {**LIMIT_RANGES, "memory": (low, high, default)}
        self._lock = threading.RLock()
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._temp = tempfile.TemporaryDirectory(prefix="owdedup-serve-")
            root = Path(self._temp.name)
        else:
            root = state_dir
        private_dir(root)
        self.state_file: Path | None = None if state_dir is None else root / "catalog.json"
        self.code = CodeStore(root / "code")
        self._docs: dict[str, dict[str, Doc]] = {c: {} for c in self.COLLECTIONS}
        self._system: dict[str, ActionDef] = {}  # relative name in whisk.system -> builtin
        #: Called with a trigger's name after it is deleted (the feed provider listens).
        self.on_trigger_deleted: list[Callable[[str], None]] = []
        #: Called with a code digest once no action uses it (the runner drops its unpacked
        #: copy, so a deleted action leaves nothing on disk).
        self.on_code_dropped: list[Callable[[str], None]] = []
        if self.state_file is not None and self.state_file.is_file():
            self._load(self.state_file)

    def close(self) -> None:
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    # -- the engine's Catalog protocol ---------------------------------------------------

    def action(self, fqn: str) -> ActionDef | None:
        path = self._parse_or_none(fqn)
        if path is None:
            return None
        if path.namespace == SYSTEM_NAMESPACE:
            return self._system.get(path.relative)
        with self._lock:
            found = self._resolve_action(path)
            if found is None or found[1]["exec"]["kind"] == SEQUENCE_KIND:
                return None
            alias, doc = found
            return self._action_def(alias, doc)

    def sequence(self, fqn: str) -> SequenceDef | None:
        path = self._parse_or_none(fqn)
        if path is None:
            return None
        with self._lock:
            found = self._resolve_action(path)
            if found is None or found[1]["exec"]["kind"] != SEQUENCE_KIND:
                return None
            _, doc = found
            return SequenceDef(doc["package"], doc["name"], tuple(doc["exec"]["components"]),
                               kv_dict(doc["annotations"]), version=str(doc["version"]))

    def trigger(self, name: str) -> TriggerDef | None:
        path = self._parse_or_none(name)
        if path is None or path.namespace != self.namespace or path.package:
            return None
        with self._lock:
            doc = self._docs["triggers"].get(path.name)
            if doc is None:
                return None
            annotations = kv_dict(doc["annotations"])
            feed = annotations.get("feed")
            return TriggerDef("", doc["name"], str(feed) if feed else None,
                              kv_dict(doc["parameters"]), annotations)

    def rules_for(self, trigger: str) -> list[RuleDef]:
        path = self._parse_or_none(trigger)
        if path is None:
            return []
        qualified = f"/{path.namespace}/{path.name}"
        with self._lock:
            return [RuleDef("", doc["name"], path.name, doc["action"])
                    for doc in sorted(self._docs["rules"].values(), key=lambda d: d["name"])
                    if doc["trigger"] == qualified and doc["status"] == "active"]

    def package_inputs(self, package: str) -> dict[str, Any]:
        if not package or package.startswith("/"):
            return {}
        with self._lock:
            doc = self._docs["packages"].get(package)
            if doc is None:
                return {}
            target = self._binding_target(doc)
            inherited = kv_dict(target["parameters"]) if target is not None else {}
            return {**inherited, **kv_dict(doc["parameters"])}

    def entity_names(self) -> list[str]:
        with self._lock:
            return sorted(self._docs["actions"])

    # -- what the runner and the server need beyond the protocol -------------------------

    def action_version(self, action: ActionDef) -> str:
        return action.version

    def add_system_action(self, relative: str, annotations: dict[str, Any] | None = None,
                          timeout_ms: int = 60_000) -> ActionDef:
        """Register a built-in action under ``/whisk.system/<relative>`` (run in process)."""
        package, _, name = relative.rpartition("/")
        definition = ActionDef(
            package=f"/{SYSTEM_NAMESPACE}/{package}" if package else f"/{SYSTEM_NAMESPACE}",
            name=name, function="", runtime=BUILTIN_KIND, annotations=dict(annotations or {}),
            limits=Limits(timeout_ms=timeout_ms),
        )
        self._system[relative] = definition
        return definition

    def system_action_doc(self, relative: str) -> Doc:
        definition = self._system.get(relative)
        if definition is None:
            raise EntityNotFound()
        package, _, name = relative.rpartition("/")
        return {"namespace": f"{SYSTEM_NAMESPACE}/{package}" if package else SYSTEM_NAMESPACE,
                "name": name, "version": "0.0.1", "publish": True,
                "exec": {"kind": BUILTIN_KIND, "binary": False},
                "annotations": kv_list(definition.annotations), "parameters": [],
                "limits": _limits_view(definition.limits), "updated": 0}

    # -- REST: packages ------------------------------------------------------------------

    def put_package(self, name: str, body: Doc, overwrite: bool) -> Doc:
        self._check_name(name)
        with self._lock:
            existing = self._existing("packages", name, overwrite)
            binding = body.get("binding")
            if binding is not None and binding != {}:
                binding = self._check_binding(binding)
            elif existing is not None and binding is None:
                binding = existing.get("binding") or {}
            else:
                binding = {}
            doc = self._common(name, body, existing)
            doc["binding"] = binding
            # As OpenWhisk's controller: a binding carries the annotation "binding".
            annotations = [a for a in doc["annotations"] if a.get("key") != "binding"]
            doc["annotations"] = [*annotations, {"key": "binding", "value": binding}] \
                if binding else annotations
            self._docs["packages"][name] = doc
            self._save()
            return self.package_view(name)

    def package_view(self, name: str) -> Doc:
        """A package; a binding shows its target's actions, and its target's parameters
        overlaid by its own (OpenWhisk's ``mergePackageWithBinding``)."""
        with self._lock:
            doc = self._get("packages", name)
            target = self._binding_target(doc)
            holder = name if target is None else target["name"]
            actions = [self._summary("actions", d)
                       for key, d in sorted(self._docs["actions"].items())
                       if key.startswith(holder + "/")]
            view = {**self._base_view(doc, self.namespace), "binding": doc["binding"],
                    "actions": actions, "feeds": []}
            if target is not None:
                view["parameters"] = kv_list({**kv_dict(target["parameters"]),
                                              **kv_dict(doc["parameters"])})
            return view

    def delete_package(self, name: str, force: bool = False) -> Doc:
        """Delete a package; one that still holds actions only with *force* (which deletes
        them too), as OpenWhisk's ``DELETE ...?force=true``."""
        with self._lock:
            view = self.package_view(name)
            contained = [k for k in self._docs["actions"] if k.startswith(name + "/")]
            if contained and not force:
                noun = "entity" if len(contained) == 1 else "entities"
                raise Conflict(f"Package not empty (contains {len(contained)} {noun})")
            for key in contained:
                del self._docs["actions"][key]
            del self._docs["packages"][name]
            self._save(collect_code=bool(contained))
            return view

    # -- REST: actions (and sequences) ---------------------------------------------------

    def put_action(self, path: EntityPath, body: Doc, overwrite: bool) -> Doc:
        self._check_name(path.name)
        with self._lock:
            if path.package:
                package = self._docs["packages"].get(path.package)
                if package is None:
                    raise EntityNotFound(f"package {path.package} does not exist")
                if package.get("binding"):
                    raise BadRequest("Cannot create or update an action in a package binding.")
            existing = self._existing("actions", path.relative, overwrite)
            raw_exec = body.get("exec")
            if raw_exec is None and existing is None:
                raise BadRequest("The request content was malformed:\nexec undefined")
            doc = self._common(path.name, body, existing)
            doc["package"] = path.package
            doc["exec"] = (self._exec(path, raw_exec) if raw_exec is not None
                           else existing["exec"] if existing is not None else {})
            doc["limits"] = _limits(body.get("limits"), existing["limits"] if existing else None,
                                    self.limit_ranges)
            annotations = [a for a in doc["annotations"] if a.get("key") != "exec"]
            doc["annotations"] = [*annotations, {"key": "exec", "value": doc["exec"]["kind"]}]
            self._docs["actions"][path.relative] = doc
            self._save(collect_code=True)
            return self.action_view(path.relative)

    def action_view(self, relative: str, code: bool = True) -> Doc:
        with self._lock:
            doc = self._get("actions", relative)
            exec_ = {k: v for k, v in doc["exec"].items() if k != "codeRef"}
            if code and "codeRef" in doc["exec"]:
                exec_["code"] = self.code.text(doc["exec"]["codeRef"], doc["exec"]["binary"])
            namespace = f"{self.namespace}/{doc['package']}" if doc["package"] else self.namespace
            return {**self._base_view(doc, namespace), "exec": exec_, "limits": doc["limits"]}

    def delete_action(self, relative: str) -> Doc:
        with self._lock:
            view = self.action_view(relative, code=False)
            del self._docs["actions"][relative]
            self._save(collect_code=True)
            return view

    # -- REST: triggers ------------------------------------------------------------------

    def put_trigger(self, name: str, body: Doc, overwrite: bool) -> Doc:
        self._check_name(name)
        with self._lock:
            existing = self._existing("triggers", name, overwrite)
            doc = self._common(name, body, existing)
            doc["limits"] = {}
            self._docs["triggers"][name] = doc
            self._save()
            return self.trigger_view(name)

    def trigger_view(self, name: str) -> Doc:
        with self._lock:
            doc = self._get("triggers", name)
            qualified = f"/{self.namespace}/{name}"
            rules = {f"{self.namespace}/{r['name']}": {"action": _path_object(r["action"]),
                                                       "status": r["status"]}
                     for r in self._docs["rules"].values() if r["trigger"] == qualified}
            return {**self._base_view(doc, self.namespace), "limits": {}, "rules": rules}

    def delete_trigger(self, name: str) -> Doc:
        with self._lock:
            view = self.trigger_view(name)
            del self._docs["triggers"][name]
            qualified = f"/{self.namespace}/{name}"
            for rule in self._docs["rules"].values():
                if rule["trigger"] == qualified:  # as OpenWhisk: orphaned rules go inactive
                    rule["status"] = "inactive"
            self._save()
        for listener in self.on_trigger_deleted:
            listener(name)
        return view

    # -- REST: rules ---------------------------------------------------------------------

    def put_rule(self, name: str, body: Doc, overwrite: bool) -> Doc:
        self._check_name(name)
        with self._lock:
            existing = self._existing("rules", name, overwrite)
            trigger = self._reference(body.get("trigger"), "trigger",
                                      existing["trigger"] if existing else None)
            action = self._reference(body.get("action"), "action",
                                     existing["action"] if existing else None)
            trigger_path = parse_name(trigger, self.namespace)
            if trigger_path.namespace != self.namespace or trigger_path.name not in \
                    self._docs["triggers"] or trigger_path.package:
                raise EntityNotFound(f"trigger {trigger} does not exist")
            action_path = parse_name(action, self.namespace)
            if self._resolve_action(action_path) is None:
                raise EntityNotFound(f"action {action} does not exist")
            doc = self._common(name, body, existing)
            doc.update(trigger=trigger_path.absolute, action=action_path.absolute,
                       status="active")
            self._docs["rules"][name] = doc
            self._save()
            return self.rule_view(name)

    def set_rule_status(self, name: str, status: Any) -> Doc:
        if status not in ("active", "inactive"):
            raise BadRequest("Rule state change must be 'active' or 'inactive'.")
        with self._lock:
            doc = self._get("rules", name)
            if status == "active":
                trigger = parse_name(doc["trigger"], self.namespace)
                if trigger.name not in self._docs["triggers"]:
                    raise EntityNotFound(f"trigger {doc['trigger']} does not exist")
            doc["status"] = status
            self._save()
            return self.rule_view(name)

    def rule_view(self, name: str) -> Doc:
        with self._lock:
            doc = self._get("rules", name)
            return {**self._base_view(doc, self.namespace), "status": doc["status"],
                    "trigger": _path_object(doc["trigger"]),
                    "action": _path_object(doc["action"])}

    def delete_rule(self, name: str) -> Doc:
        with self._lock:
            view = self.rule_view(name)
            del self._docs["rules"][name]
            self._save()
            return view

    # -- REST: listings ------------------------------------------------------------------

    def list(self, collection: str, package: str | None = None,
             public: bool = False) -> list[Doc]:
        """Summaries of a collection (``actions`` optionally of one package), by name;
        *public* keeps only what is published (OpenWhisk's ``packages?public=true``)."""
        with self._lock:
            docs = sorted(self._docs[collection].items())
            if collection == "actions" and package is not None:
                docs = [(k, d) for k, d in docs if d["package"] == package]
            if public:
                docs = [(k, d) for k, d in docs if d["publish"]]
            return [self._summary(collection, doc) for _, doc in docs]

    # -- internals -----------------------------------------------------------------------

    def _parse_or_none(self, text: str) -> EntityPath | None:
        try:
            path = parse_name(text, self.namespace)
        except BadRequest:
            return None
        return path if path.namespace in (self.namespace, SYSTEM_NAMESPACE) else None

    def _resolve_action(self, path: EntityPath) -> tuple[str, Doc] | None:
        """(package name as called, document): an action reached through a binding keeps
        the binding's name, so the binding's parameters apply."""
        if path.namespace != self.namespace:
            return None
        relative = path.relative
        if path.package:
            package = self._docs["packages"].get(path.package)
            target = None if package is None else self._binding_target(package)
            if target is not None:
                relative = f"{target['name']}/{path.name}"
        doc = self._docs["actions"].get(relative)
        return None if doc is None else (path.package, doc)

    def immutable_parameters(self, action: ActionDef) -> set[str]:
        """The parameters a payload may not set: with the annotation ``final: true``, every
        parameter the action (or its package or binding) defines with a value."""
        if not is_true(action.annotations.get("final")):
            return set()
        bound = {**self.package_inputs(action.binding or action.package), **action.inputs}
        return {key for key, value in bound.items() if value is not None}

    def _binding_target(self, package: Doc) -> Doc | None:
        binding = package.get("binding") or {}
        if not binding:
            return None
        return self._docs["packages"].get(str(binding.get("name")))

    def _check_binding(self, binding: Any) -> Doc:
        if not isinstance(binding, dict) or not isinstance(binding.get("name"), str):
            raise BadRequest("binding must be {\"namespace\": ..., \"name\": ...}")
        namespace = binding.get("namespace") or self.namespace
        namespace = self.namespace if namespace == "_" else namespace
        target = self._docs["packages"].get(binding["name"])
        if namespace != self.namespace or target is None:
            raise BadRequest("Binding references a package that does not exist.")
        if target.get("binding"):
            raise BadRequest("Cannot bind to another package binding.")
        return {"namespace": namespace, "name": binding["name"]}

    def _action_def(self, alias: str, doc: Doc) -> ActionDef:
        exec_ = doc["exec"]
        code_ref = exec_.get("codeRef")
        function = str(self.code.path(code_ref, exec_["binary"])) if code_ref else ""
        limits = doc["limits"]
        return ActionDef(
            package=doc["package"], name=doc["name"], function=function,
            runtime=exec_["kind"], main=exec_.get("main") or "main",
            inputs=kv_dict(doc["parameters"]), annotations=kv_dict(doc["annotations"]),
            limits=Limits(timeout_ms=int(limits["timeout"]), memory_mb=int(limits["memory"]),
                          log_mb=int(limits["logs"])),
            version=str(doc["version"]), binding=alias if alias != doc["package"] else "",
        )

    def _exec(self, path: EntityPath, raw: Any) -> Doc:
        if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
            raise BadRequest("The request content was malformed:\nexec must have a kind")
        kind = raw["kind"]
        if kind == SEQUENCE_KIND:
            return self._sequence_exec(path, raw.get("components"))
        family = kind.partition(":")[0]
        if kind.endswith(":default") and family in DEFAULT_KINDS:
            kind = DEFAULT_KINDS[family]
        if kind == BLACKBOX_KIND:
            return self._blackbox_exec(raw)
        if kind not in KNOWN_KINDS:  # worded as OpenWhisk's ExecManifest (a Scala Set)
            raise BadRequest("The request content was malformed:\n"
                             f"kind '{kind}' not in Set({', '.join(sorted(KNOWN_KINDS))})")
        return self._code_exec(kind, raw)

    def _blackbox_exec(self, raw: Doc) -> Doc:
        """A Docker action (``wsk action create --docker IMAGE``): accepted and kept as
        OpenWhisk keeps it, code optional; the runner answers its invocations with an error
        saying that this server cannot run it."""
        image = raw.get("image")
        if not isinstance(image, str) or not image:
            raise BadRequest("The request content was malformed:\nexec.image must be a string")
        if not isinstance(raw.get("code"), str):
            return {"kind": BLACKBOX_KIND, "image": image, "binary": False}
        return {**self._code_exec(BLACKBOX_KIND, raw), "image": image}

    def _code_exec(self, kind: str, raw: Doc) -> Doc:
        code = raw.get("code")
        if not isinstance(code, str):
            raise BadRequest("The request content was malformed:\nexec.code must be a string")
        binary = raw.get("binary")
        if not isinstance(binary, bool):
            binary = code.lstrip().startswith(_ZIP_BASE64_PREFIX)
        if binary:
            try:
                data = base64.b64decode(code, validate=False)
            except (binascii.Error, ValueError):
                raise BadRequest("exec.code is not valid base64") from None
            listed = central_directory_size(data)
            if listed is not None and listed > CENTRAL_DIRECTORY_LIMIT:
                raise TooLarge(f"Code archive lists too many members: its central directory "
                               f"is {listed} > {CENTRAL_DIRECTORY_LIMIT} bytes.")
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    unpacked = unpacked_size(archive)
            except zipfile.BadZipFile:
                raise BadRequest("exec.code is binary but not a zip archive") from None
            if unpacked > UNPACKED_CODE_LIMIT:
                raise TooLarge(f"Code unpacks larger than allowed: {unpacked} > "
                               f"{UNPACKED_CODE_LIMIT} bytes.")
        else:
            data = code.encode("utf-8")
        if len(data) > CODE_LIMIT:
            raise TooLarge(f"Code larger than allowed: {len(data)} > {CODE_LIMIT} bytes.")
        stored: Doc = {"kind": kind, "binary": binary, "codeRef": self.code.put(data, binary)}
        if isinstance(raw.get("main"), str) and raw["main"]:
            stored["main"] = raw["main"]
        return stored

    def _sequence_exec(self, path: EntityPath, components: Any) -> Doc:
        if not isinstance(components, list) or not components or \
                not all(isinstance(c, str) for c in components):
            raise BadRequest("The request content was malformed:\n"
                             "a sequence needs a non-empty list of component names")
        qualified = []
        for component in components:
            component_path = parse_name(component, self.namespace)
            if component_path.absolute == path.absolute:
                raise BadRequest("Sequence may not refer to itself.")
            if component_path.namespace == SYSTEM_NAMESPACE:
                if component_path.relative not in self._system:
                    raise BadRequest(SEQUENCE_COMPONENT_MISSING)
            elif self._resolve_action(component_path) is None:
                raise BadRequest(SEQUENCE_COMPONENT_MISSING)
            qualified.append(component_path.absolute)
        # As OpenWhisk's controller at create: expand nested sequences, refuse one that
        # (through others) contains the sequence being written, and count the actions.
        atomic = sum(self._atomic_actions(c, path.absolute, ()) for c in qualified)
        if atomic > SEQUENCE_LIMIT:
            raise BadRequest("Too many actions in the sequence.")
        return {"kind": SEQUENCE_KIND, "components": qualified}

    def _atomic_actions(self, component: str, writing: str, under: tuple[str, ...]) -> int:
        """How many actions *component* runs; a BadRequest when it runs *writing* (the
        sequence being written) or a sequence it is already inside."""
        found = self._resolve_action(parse_name(component, self.namespace))
        if found is None or found[1]["exec"]["kind"] != SEQUENCE_KIND:
            return 1  # an action (or a built-in)
        doc = found[1]
        resolved = EntityPath(self.namespace, doc["package"], doc["name"]).absolute
        if resolved == writing or resolved in under:
            raise BadRequest("Sequence may not refer to itself.")
        return sum(self._atomic_actions(c, writing, (*under, resolved))
                   for c in doc["exec"]["components"])

    def _reference(self, value: Any, what: str, existing: str | None) -> str:
        if value is None and existing is not None:
            return existing
        if isinstance(value, dict):  # {"name": ..., "path": ...} as OpenWhisk returns it
            value = f"/{value.get('path')}/{value.get('name')}"
        if not isinstance(value, str) or not value:
            raise BadRequest(f"The request content was malformed:\nrule {what} undefined")
        return value

    def _existing(self, collection: str, key: str, overwrite: bool) -> Doc | None:
        existing = self._docs[collection].get(key)
        if existing is not None and not overwrite:
            raise Conflict("resource already exists")
        return existing

    def _get(self, collection: str, key: str) -> Doc:
        doc = self._docs[collection].get(key)
        if doc is None:
            raise EntityNotFound()
        return doc

    def _check_name(self, name: str) -> None:
        check_entity_name(name)

    def _common(self, name: str, body: Doc, existing: Doc | None) -> Doc:
        """The fields every entity has, with OpenWhisk's update rule: a field absent from
        an overwriting PUT keeps its value; the version's patch number goes up."""
        parameters = _kv_field(body, "parameters")
        annotations = _kv_field(body, "annotations")
        if parameters is not None and len(json.dumps(parameters)) > PARAMETERS_LIMIT:
            raise TooLarge(f"Parameters larger than allowed: > {PARAMETERS_LIMIT} bytes.")
        publish = body.get("publish")
        if existing is None:
            version = str(body.get("version") or "0.0.1")
            return {"name": name, "version": version, "publish": bool(publish),
                    "parameters": parameters or [], "annotations": annotations or [],
                    "updated": now_ms()}
        return {**existing,
                "version": str(body.get("version") or _next_version(existing["version"])),
                "publish": existing["publish"] if publish is None else bool(publish),
                "parameters": existing["parameters"] if parameters is None else parameters,
                "annotations": existing["annotations"] if annotations is None else annotations,
                "updated": now_ms()}

    def _base_view(self, doc: Doc, namespace: str) -> Doc:
        return {"namespace": namespace, "name": doc["name"], "version": doc["version"],
                "publish": doc["publish"], "annotations": doc["annotations"],
                "parameters": doc["parameters"], "updated": doc["updated"]}

    def _summary(self, collection: str, doc: Doc) -> Doc:
        if collection == "actions":
            view = self.action_view(f"{doc['package']}/{doc['name']}" if doc["package"]
                                    else doc["name"], code=False)
            view.pop("parameters")
            return view
        if collection == "packages":
            view = self._base_view(doc, self.namespace)
            view["binding"] = doc["binding"]
            return view
        if collection == "rules":
            return self.rule_view(doc["name"])
        view = self._base_view(doc, self.namespace)
        view.pop("parameters")
        return view

    def _save(self, collect_code: bool = False) -> None:
        if collect_code:
            dropped = self.code.keep_only({d["exec"]["codeRef"]
                                           for d in self._docs["actions"].values()
                                           if "codeRef" in d["exec"]})
            for digest in dropped:
                for listener in self.on_code_dropped:
                    listener(digest)
        if self.state_file is None:
            return
        state = {"namespace": self.namespace, **self._docs}
        write_atomic(self.state_file, json.dumps(state, indent=1, sort_keys=True).encode())

    def _load(self, file: Path) -> None:
        state = json.loads(file.read_text())
        for collection in self.COLLECTIONS:
            self._docs[collection] = dict(state.get(collection) or {})


def _kv_field(body: Doc, key: str) -> list[Doc] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            isinstance(p, dict) and isinstance(p.get("key"), str) for p in value):
        raise BadRequest(f"The request content was malformed:\n{key} must be a list of "
                         "{\"key\": ..., \"value\": ...}")
    return [{"key": p["key"], "value": p.get("value")} for p in value]


def _limits(raw: Any, existing: Doc | None, ranges: dict[str, tuple[int, int, int]]) -> Doc:
    if raw is not None and not isinstance(raw, dict):
        raise BadRequest("The request content was malformed:\nlimits must be an object")
    limits = dict(existing or {k: default for k, (_, _, default) in ranges.items()})
    for key, value in (raw or {}).items():
        if key not in ranges or value is None:
            continue
        low, high, _ = ranges[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"The request content was malformed:\n{key} limit must be an "
                             "integer")
        if not low <= value <= high:
            raise BadRequest("The request content was malformed:\n"
                             f"{_limit_out_of_range(key, value, low, high)}")
        limits[key] = value
    return limits


def _limit_out_of_range(key: str, value: int, low: int, high: int) -> str:
    """As OpenWhisk's limit classes word it, e.g. ``requirement failed: memory 1024 MB
    exceeds allowed threshold of 512 MB``."""
    what, unit = _LIMIT_WORDS[key]
    suffix = f" {unit}" if unit else ""
    side, bound = ("below", low) if value < low else ("exceeds", high)
    return (f"requirement failed: {what} {value}{suffix} {side} allowed threshold of "
            f"{bound}{suffix}")


def _limits_view(limits: Limits) -> Doc:
    return {"timeout": limits.timeout_ms, "memory": limits.memory_mb, "logs": limits.log_mb,
            "concurrency": 1}


def _next_version(version: str) -> str:
    parts = version.split(".")
    try:
        parts[-1] = str(int(parts[-1]) + 1)
    except ValueError:
        return version
    return ".".join(parts)


def _path_object(qualified: str) -> Doc:
    """``/ns/pkg/name`` -> ``{"name": "name", "path": "ns/pkg"}`` (how rules show them)."""
    path, _, name = qualified.strip("/").rpartition("/")
    return {"name": name, "path": path}
