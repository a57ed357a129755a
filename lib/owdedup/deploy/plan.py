"""What ``owdedup deploy`` (and so ``deploy.sh``) checks and prepares before it runs
wskdeploy; the planner (:mod:`owdedup.deploy.operations`) and the executor
(:mod:`owdedup.deploy.executor`) build on it.

wskdeploy turns an unset ``$VAR`` in the manifest into ``""`` without a word, and reads
``--auth`` from a command line that ``ps`` shows to every user of the machine. So, before
anything is built or created:

``check`` / ``require``
    finds the OpenWhisk target (``OW_APIHOST``, ``OW_AUTH``, ``OW_NAMESPACE``, else the
    ``APIHOST=``/``AUTH=``/``NAMESPACE=`` lines of ``$WSK_CONFIG_FILE`` or ``~/.wskprops``, as
    ``wsk`` keeps them; namespace default ``_``) and every ``OWDEDUP_*`` variable the manifest
    binds, and fails listing *all* the missing or malformed ones at once.
``stage``
    writes what wskdeploy reads into a private folder: ``wskprops`` (mode 0600: the key
    reaches wskdeploy through ``--config``, never through its command line), the manifest
    (without the Kafka feed trigger and its rule under ``--no-kafka-feed``) and, beside it,
    ``build/actions`` (a link to the built zips, or empty placeholder zips for a dry run:
    ``--preview`` reads every ``function:`` file but never sends its content).
``wskdeploy_binary``
    the wskdeploy binary to run: ``$WSKDEPLOY``, else ``openwhisk-wskdeploy`` from the
    services cache, built there first when missing.

Nothing here prints a credential: messages name variables, never their values.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from owdedup.deploy.build import manifest_actions
from owdedup.runtime import env as env_names
from owdedup.runtime import stores
from owdedup.runtime.errors import OwdedupError
from owdedup.runtime.records import registry as records_registry

# The OpenWhisk target -----------------------------------------------------------------------

ENV_APIHOST: Final = "OW_APIHOST"
ENV_AUTH: Final = "OW_AUTH"
ENV_NAMESPACE: Final = "OW_NAMESPACE"
ENV_WSK_CONFIG: Final = "WSK_CONFIG_FILE"
DEFAULT_NAMESPACE: Final = "_"
#: wskprops keys carried over to the staged file when the source file has them (client
#: certificate authentication); wskdeploy reads nothing else of it that deploying needs.
CARRIED_PROPS: Final = ("CERT", "KEY")

#: The project's manifest, as installed with the package (deploy.sh deploys this one).
BUNDLED_MANIFEST: Final = Path(__file__).resolve().parents[1] / "bundle" / "manifest.yaml"
FEED_KEYS: Final = ("feed", "source")  # wskdeploy: `source` is the deprecated `feed`
EMPTY_ZIP: Final = b"PK\x05\x06" + b"\x00" * 18


class DeployCheckError(OwdedupError):
    """The deployment cannot start: the message lists every problem found."""

    kind = "config"


@dataclass(frozen=True)
class Target:
    """Where wskdeploy deploys. ``auth`` is the secret: it is kept out of ``repr``."""

    apihost: str
    auth: str = field(repr=False)
    namespace: str
    #: Where each of apihost, auth and namespace came from (a variable name or a file).
    sources: Mapping[str, str]
    #: Further wskprops lines to carry over (``CERT``, ``KEY``), name -> value.
    extra: Mapping[str, str] = field(default_factory=dict)

    def wskprops(self) -> str:
        """The staged wskprops file, in the ``NAME=value`` lines wskdeploy reads."""
        lines = [f"APIHOST={self.apihost}", f"AUTH={self.auth}", f"NAMESPACE={self.namespace}"]
        lines += [f"{name}={value}" for name, value in self.extra.items()]
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        return (f"OpenWhisk {self.apihost} (from {self.sources['apihost']}), namespace "
                f"{self.namespace} (from {self.sources['namespace']}), key from "
                f"{self.sources['auth']}")


def wskprops_path(environ: Mapping[str, str]) -> Path:
    """The file ``wsk`` and wskdeploy read: ``$WSK_CONFIG_FILE``, else ``~/.wskprops``."""
    if environ.get(ENV_WSK_CONFIG, "").strip():
        return Path(environ[ENV_WSK_CONFIG]).expanduser()
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".wskprops"


def read_wskprops(path: Path) -> dict[str, str]:
    """``NAME=value`` lines as openwhisk-client-go's ``ReadProps`` reads them: a line with
    other than exactly one ``=`` is skipped; names and values are trimmed. ``{}`` when the
    file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DeployCheckError(f"cannot read {path}: {exc.strerror}") from None
    props: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("=")
        if len(parts) == 2:
            props[parts[0].strip()] = parts[1].strip()
    return props


def _unusable(value: str) -> bool:
    """A value wskdeploy would silently drop or misread from a wskprops line."""
    return "=" in value or any(ch.isspace() for ch in value)


def resolve_target(environ: Mapping[str, str]) -> tuple[Target | None, list[str]]:
    """The target, or None and the problems (naming the settings, never their values)."""
    props_path = wskprops_path(environ)
    problems: list[str] = []
    try:
        props = read_wskprops(props_path)
    except DeployCheckError as exc:
        props, problems = {}, [str(exc)]
    found: dict[str, str] = {}
    sources: dict[str, str] = {}
    for what, variable, prop in (("apihost", ENV_APIHOST, "APIHOST"),
                                 ("auth", ENV_AUTH, "AUTH"),
                                 ("namespace", ENV_NAMESPACE, "NAMESPACE")):
        if environ.get(variable, "").strip():
            found[what], sources[what] = environ[variable].strip(), variable
        elif props.get(prop):
            found[what], sources[what] = props[prop], f"{prop}= in {props_path}"
    if "namespace" not in found:
        found["namespace"], sources["namespace"] = DEFAULT_NAMESPACE, "the default"
    if "apihost" not in found:
        problems.append(f"{ENV_APIHOST} (or APIHOST= in {props_path}): the OpenWhisk API host, "
                        "e.g. https://openwhisk.example.org or http://127.0.0.1:3233")
    elif _unusable(found["apihost"]):
        problems.append(f"{ENV_APIHOST}: must not contain '=' or spaces ({sources['apihost']})")
    if "auth" not in found:
        problems.append(f"{ENV_AUTH} (or AUTH= in {props_path}): the OpenWhisk key, UUID:KEY")
    else:
        user, sep, secret = found["auth"].partition(":")
        if not (user and sep and secret) or _unusable(found["auth"]):
            problems.append(f"{ENV_AUTH}: not of the form UUID:KEY (from {sources['auth']}; "
                            "value not shown)")
    if _unusable(found["namespace"]) or "/" in found["namespace"]:
        problems.append(f"{ENV_NAMESPACE}: not a namespace name ({sources['namespace']})")
    if problems:
        return None, problems
    extra = {name: props[name] for name in CARRIED_PROPS
             if props.get(name) and not _unusable(props[name])}
    return Target(found["apihost"], found["auth"], found["namespace"], sources, extra), []


# The manifest's variables -----------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    name: str
    purpose: str


STORE: Final = Variable(env_names.STORE, "object-store URL, e.g. http://minio.example:9000")
STORE_ACCESS_KEY: Final = Variable(env_names.STORE_ACCESS_KEY, "object-store access key")
STORE_SECRET_KEY: Final = Variable(env_names.STORE_SECRET_KEY, "object-store secret key")
RECORDS: Final = Variable(env_names.RECORDS,
                          "record-store URL, e.g. http://couchdb:5984/owdedup")
OUT_BUCKET: Final = Variable(env_names.OUT_BUCKET, "bucket that receives the thumbnails")
KAFKA: Final = Variable(env_names.KAFKA, "Kafka brokers for the feed, host:port[,host:port]")
KAFKA_TOPIC: Final = Variable(env_names.KAFKA_TOPIC, "topic of MinIO's upload events")
#: The manifest inputs holding credentials: masked in a ``--preview``.
SECRET_VARIABLES: Final = (env_names.STORE_ACCESS_KEY, env_names.STORE_SECRET_KEY,
                           env_names.RECORDS_USERNAME, env_names.RECORDS_PASSWORD)

#: Backends that live on the machine the actions run on: no keys, and only useful where the
#: actions share its disk (``owdedup serve``), never on a real OpenWhisk.
LOCAL_SCHEMES: Final = ("file", "sqlite")


def _value(environ: Mapping[str, str], variable: Variable) -> str:
    return environ.get(variable.name, "").strip()


def _url_problem(variable: Variable, url: str, schemes: Sequence[str]) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or "://" not in url:
        return f"{variable.name}: not a {', '.join(s + '://' for s in schemes)} URL"
    if parts.username is not None or parts.password is not None:
        return (f"{variable.name}: holds credentials in the URL (value not shown); set them in "
                f"{variable.name}_* variables instead, which the manifest binds as inputs")
    return None


def _brokers_problem(value: str) -> str | None:
    for broker in value.split(","):
        host, sep, port = broker.strip().rpartition(":")
        if not (host and sep and port.isdigit()):
            return f"{KAFKA.name}: {broker.strip()!r} is not host:port"
    return None


def variable_problems(environ: Mapping[str, str], *, kafka_feed: bool = True,
                      manifest: Path | None = None) -> list[str]:
    """Every required ``OWDEDUP_*`` variable that is unset or empty, and every malformed one
    (*manifest*: the one deployed, by default the project's)."""
    missing: list[Variable] = []
    bad: list[str] = []
    required = [STORE, RECORDS, OUT_BUCKET, *((KAFKA, KAFKA_TOPIC) if kafka_feed else ())]
    for variable in required:
        if not _value(environ, variable):
            missing.append(variable)
    store = _value(environ, STORE)
    if store:
        problem = _url_problem(STORE, store, stores.registry.schemes())
        if problem:
            bad.append(problem)
        elif urlsplit(store).scheme not in LOCAL_SCHEMES:  # an S3 endpoint needs its keys
            missing += [v for v in (STORE_ACCESS_KEY, STORE_SECRET_KEY) if not _value(environ, v)]
    records = _value(environ, RECORDS)
    if records:
        problem = _url_problem(RECORDS, records, records_registry.schemes())
        if problem:
            bad.append(problem)
    if kafka_feed and _value(environ, KAFKA):
        problem = _brokers_problem(_value(environ, KAFKA))
        if problem:
            bad.append(problem)
    bad += _function_problems(environ, manifest or BUNDLED_MANIFEST)
    return [f"{v.name}: {v.purpose} (unset)" for v in missing] + bad


def _function_problems(environ: Mapping[str, str], manifest: Path) -> list[str]:
    """For each function the manifest deploys (its compute action is there): its sequence,
    and the package inputs that are its parameters, checked as the function will read them
    (wskdeploy would bind a bad value without a word, and every activation would fail)."""
    from owdedup.engine.manifest import load_manifest
    from owdedup.runtime.functions import registry, sequence_of

    try:
        model = load_manifest(manifest, environ)
    except OwdedupError as exc:
        return [str(exc)]
    problems = []
    for package in model.packages.values():
        for function in registry.all():
            if function.name not in package.actions:
                continue
            sequence = package.sequences.get(sequence_of(function.name))
            expected = tuple(f"{package.name}/{step}"
                             for step in ("hash", "lookup", function.name, "record"))
            if sequence is None or sequence.components != expected:
                problems.append(
                    f"{manifest}: the action {function.name} needs the sequence "
                    f"{sequence_of(function.name)} = hash, lookup, {function.name}, record")
            bound = [name for name in package.inputs if name in function.parameters]
            try:
                function.normalise({name: package.inputs[name] for name in bound})
            except OwdedupError as exc:
                variables = [v for name in bound for v in package.input_variables.get(name, ())]
                problems.append(f"{_joined(variables) or function.name}: {exc}")
    return problems


def _joined(variables: Sequence[str]) -> str:
    """``OWDEDUP_SIZES/FORMAT/QUALITY``: the names, their shared ``OWDEDUP_`` said once."""
    prefix = env_names.PREFIX
    return "/".join(v if i == 0 or not v.startswith(prefix) else v.removeprefix(prefix)
                    for i, v in enumerate(variables))


@dataclass(frozen=True)
class CheckResult:
    target: Target | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check(environ: Mapping[str, str], *, kafka_feed: bool = True,
          undeploy: bool = False) -> CheckResult:
    """Everything a deployment (or an undeployment, which needs only the target) lacks."""
    target, problems = resolve_target(environ)
    if not undeploy:
        problems += variable_problems(environ, kafka_feed=kafka_feed)
    return CheckResult(target, tuple(problems))


def require(environ: Mapping[str, str], *, kafka_feed: bool = True,
            undeploy: bool = False) -> Target:
    result = check(environ, kafka_feed=kafka_feed, undeploy=undeploy)
    if result.target is None or not result.ok:
        what = "undeploy" if undeploy else "deploy"
        lines = "\n".join(f"  - {problem}" for problem in result.problems)
        raise DeployCheckError(
            f"cannot {what}: {len(result.problems)} setting(s) missing or wrong "
            f"(nothing was built or created):\n{lines}"
        )
    return result.target


# Staging --------------------------------------------------------------------------------


def without_kafka_feed(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest minus its feed triggers and the rules on them: for deployments whose
    OpenWhisk has no Kafka feed provider (uploads then arrive through the webhook trigger)."""
    data: dict[str, Any] = yaml.safe_load(yaml.safe_dump(dict(manifest)))  # a deep copy
    for package in (data.get("packages") or {}).values():
        triggers: dict[str, Any] = (package or {}).get("triggers") or {}
        feeds = {name for name, spec in triggers.items()
                 if any((spec or {}).get(key) for key in FEED_KEYS)}
        for name in feeds:
            del triggers[name]
        rules: dict[str, Any] = (package or {}).get("rules") or {}
        for name in [n for n, spec in rules.items() if (spec or {}).get("trigger") in feeds]:
            del rules[name]
        for key, emptied in (("triggers", triggers), ("rules", rules)):
            if key in package and not emptied:
                del package[key]
    return data


def _write_private(path: Path, text: str) -> None:
    """Create *path* readable by its owner only, before a byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def stage(project: Path, out: Path, target: Target, *, kafka_feed: bool = True,
          placeholders: bool = False) -> Path:
    """Write ``wskprops``, ``manifest.yaml`` and ``build/actions`` into *out* (an empty,
    private folder); returns the staged manifest."""
    manifest = project / "manifest.yaml"
    out.mkdir(parents=True, exist_ok=True)
    _write_private(out / "wskprops", target.wskprops())
    staged = out / "manifest.yaml"
    if kafka_feed:
        shutil.copyfile(manifest, staged)
    else:
        data = without_kafka_feed(yaml.safe_load(manifest.read_text()) or {})
        staged.write_text("# Generated by owdedup deploy --no-kafka-feed from manifest.yaml\n"
                          + yaml.safe_dump(data, sort_keys=False))
    zips = [f"{stem}.zip" for _, stem, _ in manifest_actions(manifest)]
    build = out / "build"
    build.mkdir()
    if placeholders:
        (build / "actions").mkdir()
        for name in zips:
            (build / "actions" / name).write_bytes(EMPTY_ZIP)
    else:
        built = project / "build" / "actions"
        absent = [name for name in zips if not (built / name).is_file()]
        if absent:
            raise DeployCheckError(f"not built: {', '.join(absent)} in {built} "
                                   "(python -m owdedup.deploy builds them)")
        (build / "actions").symlink_to(built.resolve(), target_is_directory=True)
    return staged


# wskdeploy ------------------------------------------------------------------------------


def wskdeploy_binary(environ: Mapping[str, str], *, install: bool = True) -> Path:
    """``$WSKDEPLOY``, else the services cache's ``openwhisk-wskdeploy`` (built when missing
    and *install*)."""
    given = environ.get("WSKDEPLOY", "").strip()
    if given:
        found = shutil.which(given)
        if found is None:
            raise DeployCheckError(f"WSKDEPLOY={given}: not an executable")
        return Path(found)
    from owdedup.services.config import ServicesConfig
    from owdedup.services.install import install_wskdeploy, is_wskdeploy_installed, wskdeploy_path

    config = ServicesConfig.from_env(environ)
    if not is_wskdeploy_installed(config):
        if not install:
            raise DeployCheckError(f"wskdeploy is not installed ({wskdeploy_path(config)})")
        install_wskdeploy(config)
    return wskdeploy_path(config)
