"""Read a wskdeploy ``manifest.yaml`` into a model, with wskdeploy's own rules.

Rules kept from wskdeploy (see the project's platform notes): unknown keys are errors (its
YAML schema is strict); ``$VAR`` / ``${VAR}`` are substituted from the environment and an
unset variable becomes ""; a sequence's ``actions`` is one comma-separated string; an input is
either a plain value or a mapping with ``type``/``value``/``default``/``description``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from owdedup.runtime.errors import ConfigError

PACKAGE_KEYS = {"version", "license", "inputs", "actions", "sequences", "triggers", "rules",
                "annotations", "dependencies", "apis", "namespace", "public"}
ACTION_KEYS = {"function", "code", "runtime", "main", "inputs", "outputs", "annotations",
               "limits", "web", "web-export", "docker", "native", "conductor", "include",
               "exclude", "raw-http", "web-secure"}
SEQUENCE_KEYS = {"actions", "annotations", "web", "web-export"}
TRIGGER_KEYS = {"feed", "source", "inputs", "annotations"}
RULE_KEYS = {"trigger", "action", "rule"}
INPUT_KEYS = {"type", "value", "default", "description", "required"}
LIMIT_KEYS = {"timeout", "memorySize", "logSize", "concurrentActivations", "userInvocationRate",
              "codeSize", "parameterSize"}

_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Limits:
    timeout_ms: int = 60_000
    memory_mb: int = 256
    log_mb: int = 10


@dataclass(frozen=True)
class ActionDef:
    package: str
    name: str
    function: str
    runtime: str
    main: str = "main"
    inputs: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    limits: Limits = Limits()
    version: str = "0.0.1"
    #: The package binding the action was reached through ("" if none): its parameters
    #: apply, and the activation says so, while ``package`` is the package that holds it.
    binding: str = ""

    @property
    def fqn(self) -> str:
        return f"{self.package}/{self.name}"


@dataclass(frozen=True)
class SequenceDef:
    package: str
    name: str
    components: tuple[str, ...]  # fully qualified: "pkg/action"
    annotations: dict[str, Any] = field(default_factory=dict)
    version: str = "0.0.1"

    @property
    def fqn(self) -> str:
        return f"{self.package}/{self.name}"


@dataclass(frozen=True)
class TriggerDef:
    package: str
    name: str
    feed: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleDef:
    package: str
    name: str
    trigger: str
    action: str  # fully qualified


@dataclass(frozen=True)
class PackageDef:
    name: str
    version: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, ActionDef] = field(default_factory=dict)
    sequences: dict[str, SequenceDef] = field(default_factory=dict)
    triggers: dict[str, TriggerDef] = field(default_factory=dict)
    rules: dict[str, RuleDef] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    #: The environment variables each package input is bound from (``$VAR``), by input.
    input_variables: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    path: Path
    packages: dict[str, PackageDef]

    @property
    def root(self) -> Path:
        return self.path.parent

    def action(self, fqn: str) -> ActionDef | None:
        package, _, name = fqn.strip("/").rpartition("/")
        pkg = self.packages.get(package)
        return None if pkg is None else pkg.actions.get(name)

    def sequence(self, fqn: str) -> SequenceDef | None:
        package, _, name = fqn.strip("/").rpartition("/")
        pkg = self.packages.get(package)
        return None if pkg is None else pkg.sequences.get(name)

    def package_inputs(self, package: str) -> dict[str, Any]:
        pkg = self.packages.get(package)
        return {} if pkg is None else pkg.inputs

    def trigger(self, name: str) -> TriggerDef | None:
        # Triggers and rules live in the namespace, not in a package (as wskdeploy creates them).
        short = name.strip("/").rpartition("/")[2]
        for pkg in self.packages.values():
            if short in pkg.triggers:
                return pkg.triggers[short]
        return None

    def rules_for(self, trigger: str) -> list[RuleDef]:
        short = trigger.strip("/").rpartition("/")[2]
        return [rule for pkg in self.packages.values() for rule in pkg.rules.values()
                if rule.trigger == short]

    def entity_names(self) -> list[str]:
        names = []
        for pkg in self.packages.values():
            names += [a.fqn for a in pkg.actions.values()]
            names += [s.fqn for s in pkg.sequences.values()]
        return sorted(names)


def substitute(value: Any, env: Mapping[str, str]) -> Any:
    """wskdeploy's ``$VAR`` substitution; an unset variable silently becomes ""."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, env) for k, v in value.items()}
    return value


def load_manifest(path: Path, env: Mapping[str, str]) -> Manifest:
    try:
        # libyaml's loader when PyYAML has it: the same safe subset, 10x faster, and every
        # map worker and invoke parses the manifest before its first object.
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise ConfigError(f"manifest not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a manifest (expected a mapping)")
    packages_raw = raw.get("packages")
    if "package" in raw:  # wskdeploy also accepts a single `package:`
        packages_raw = {raw["package"].pop("name", "default"): raw["package"]}
    _check_keys(raw, {"packages", "package", "project"}, "manifest")
    if not isinstance(packages_raw, dict) or not packages_raw:
        raise ConfigError(f"{path}: no packages")
    packages = {
        name: _package(str(name), body or {}, env) for name, body in packages_raw.items()
    }
    return Manifest(path.resolve(), packages)


def _package(name: str, body: dict[str, Any], env: Mapping[str, str]) -> PackageDef:
    _check_keys(body, PACKAGE_KEYS, f"package {name}")
    actions = {}
    for action_name, spec in (body.get("actions") or {}).items():
        actions[action_name] = _action(name, str(action_name), spec or {}, env)
    sequences = {}
    for seq_name, spec in (body.get("sequences") or {}).items():
        _check_keys(spec, SEQUENCE_KEYS, f"sequence {seq_name}")
        listed = spec.get("actions")
        if not isinstance(listed, str):
            # wskdeploy rejects a YAML list here; fail the same way, before deploying.
            raise ConfigError(f"sequence {seq_name}: 'actions' must be one comma-separated string")
        components = tuple(
            _qualify(name, part.strip()) for part in listed.split(",") if part.strip()
        )
        sequences[seq_name] = SequenceDef(name, str(seq_name), components,
                                          dict(spec.get("annotations") or {}))
    triggers = {}
    for trig_name, spec in (body.get("triggers") or {}).items():
        spec = spec or {}
        _check_keys(spec, TRIGGER_KEYS, f"trigger {trig_name}")
        triggers[trig_name] = TriggerDef(
            name, str(trig_name), spec.get("feed") or spec.get("source"),
            _inputs(spec.get("inputs"), env, f"trigger {trig_name}"),
            dict(spec.get("annotations") or {}),
        )
    rules = {}
    for rule_name, spec in (body.get("rules") or {}).items():
        _check_keys(spec, RULE_KEYS, f"rule {rule_name}")
        rules[rule_name] = RuleDef(name, str(rule_name), str(spec["trigger"]),
                                   _qualify(name, str(spec["action"])))
    for seq in sequences.values():
        for component in seq.components:
            short = component.rpartition("/")[2]
            local = component.startswith(name + "/")
            if local and short not in actions and short not in sequences:
                raise ConfigError(f"sequence {seq.name}: unknown action {component}")
    return PackageDef(
        name=name,
        version=str(body.get("version", "")),
        inputs=_inputs(body.get("inputs"), env, f"package {name}"),
        actions=actions, sequences=sequences, triggers=triggers, rules=rules,
        annotations=dict(body.get("annotations") or {}),
        input_variables=_input_variables(body.get("inputs")),
    )


def _action(package: str, name: str, spec: dict[str, Any], env: Mapping[str, str]) -> ActionDef:
    _check_keys(spec, ACTION_KEYS, f"action {name}")
    if "function" not in spec:
        raise ConfigError(f"action {name}: no 'function'")
    limits_raw = spec.get("limits") or {}
    _check_keys(limits_raw, LIMIT_KEYS, f"action {name} limits")
    limits = Limits(
        timeout_ms=int(limits_raw.get("timeout", 60_000)),
        memory_mb=int(limits_raw.get("memorySize", 256)),
        log_mb=int(limits_raw.get("logSize", 10)),
    )
    annotations = dict(spec.get("annotations") or {})
    conductor = spec.get("conductor", False)
    if not isinstance(conductor, bool):
        raise ConfigError(f"action {name}: 'conductor' must be true or false, not {conductor!r}")
    if conductor:  # wskdeploy's shorthand for the annotation
        annotations["conductor"] = True
    return ActionDef(
        package=package, name=name,
        function=str(substitute(spec["function"], env)),
        runtime=str(spec.get("runtime", "")),
        main=str(spec.get("main", "main")),
        inputs=_inputs(spec.get("inputs"), env, f"action {name}"),
        annotations=annotations,
        limits=limits,
    )


def _inputs(raw: Any, env: Mapping[str, str], where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'inputs' must be a mapping")
    values: dict[str, Any] = {}
    for key, spec in raw.items():
        if isinstance(spec, dict) and set(spec) <= INPUT_KEYS and spec:
            value = spec.get("value", spec.get("default"))
            values[key] = _typed(substitute(value, env), spec.get("type"), f"{where} input {key}")
        else:
            values[key] = substitute(spec, env)
    return values


def _input_variables(raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        return {}
    found: dict[str, tuple[str, ...]] = {}
    for key, spec in raw.items():
        value = spec.get("value", spec.get("default")) if isinstance(spec, dict) else spec
        names = tuple(a or b for a, b in _VAR.findall(value)) if isinstance(value, str) else ()
        if names:
            found[str(key)] = names
    return found


def _typed(value: Any, type_name: Any, where: str) -> Any:
    if value is None or value == "" or type_name in (None, "string", "json"):
        return value
    try:
        if type_name == "integer":
            return int(value)
        if type_name == "float":
            return float(value)
        if type_name == "boolean":
            return value if isinstance(value, bool) else str(value).lower() == "true"
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not of type {type_name}") from None
    return value


def _qualify(package: str, name: str) -> str:
    name = name.strip("/")
    return name if "/" in name else f"{package}/{name}"


def _check_keys(body: Any, allowed: set[str], where: str) -> None:
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (wskdeploy rejects them)")
