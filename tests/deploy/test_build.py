"""The action zips: reproducible, laid out for the python:3.11 runtime, and self-sufficient.

The key test runs every zip the way the runtime does, in a fresh base interpreter started
with ``-I -S`` (no site-packages at all: not the project's venv, not the interpreter's own),
through the runtime's launcher (:mod:`owdedup.actionloop.launcher`, the one serve uses),
with only the zip and the runtime image's packages at the image's versions
(:mod:`owdedup.actionloop.site`) on ``sys.path``. A zip that leans on anything installed
for development fails there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from owdedup.actionloop.code import unpack
from owdedup.deploy import build, install, zipper
from owdedup.deploy.build import BuiltZip, plan_build, size_report
from owdedup.deploy.needs import (
    REGISTRY_MODULES,
    Pin,
    action_requirements,
    installed_version,
    registry_needs,
    resolve_packages,
    runtime_modules,
)
from owdedup.deploy.runtime import (
    ACTIVATE_THIS,
    MAX_ZIP_BYTES,
    PACKAGE_TRIMS,
    PINS_FILE,
    RUNTIME_PACKAGES,
    SITE_PACKAGES,
    BuildError,
)
from owdedup.runtime.functions import FunctionRegistry, get_function
from owdedup.runtime.identity import code_digest
from owdedup.runtime.registry import Registry
from tests.conftest import PROJECT
from tests.imagegen import jpeg
from tests.tooling import need_base_python
from tests.unit.test_events import minio_event

MANIFEST = PROJECT / "manifest.yaml"
ACTIONS = ("hash", "lookup", "thumbnail", "record", "dispatch")
HIT_PATH = ("hash", "lookup", "record", "dispatch")

#: No bigger than before issue 7 (the runtime became a folder): the sizes in bytes of the zips
#: built from 4c5a0f7, the commit before it, with the same pinned third-party packages
#: (minio 7.2.20, ibmcloudant 0.11.12, requests 2.34.2...). Back then each zip carried the
#: owdedup modules its imports reached; issue 7 shipped the whole runtime in every zip (hash
#: 670,384, lookup/record 1,869,3xx, dispatch 299,361); now each carries its import closure
#: plus what the registries name. A zip that outgrows its ceiling must say why here (a
#: dependency upgrade is a reason to raise it; shipping code the action cannot use is not).
ZIP_CEILINGS = {"hash": 538_768, "lookup": 1_737_814, "record": 1_737_777, "dispatch": 173_226}

#: Runs an unpacked zip with the runtime's own launcher (``exec__.py``, which the one unpacker
#: copies in as the runtime's ``compile`` does): run as a script (no bytecode of it, as
#: ``python exec__.py``), it prepares ``sys.path``, the runtime's packages and the virtualenv,
#: loads ``main`` and calls it with the runtime's contract. Around that, the probe does what
#: the test asks and reports what the process imported, and from where. Run with ``-c``, so
#: that nothing of the probe itself shows up as a module.
PROBE = r'''
import importlib, json, os, runpy, sys, types
action_dir, runtime_site, request_file, report_file = sys.argv[1:5]
with open(request_file) as f:
    request = json.load(f)
stdlib = os.path.dirname(os.__file__)
os.chdir(action_dir)
os.environ.update(request.get("env", {}))
launcher = types.SimpleNamespace(**runpy.run_path("exec__.py", run_name="exec__"))
launcher.prepare(action_dir, [runtime_site])

report = {"stdlib": stdlib, "failed": {}}
for name in request.get("import", []):
    importlib.import_module(name)
for target in request.get("call", []):
    module, _, function = target.partition(":")
    getattr(importlib.import_module(module), function)()
for name in request.get("try_import", []):
    try:
        importlib.import_module(name)
    except ImportError as exc:
        report["failed"][name] = exc.name or str(exc)
report["targets"] = {}
for holder in request.get("registries", []):
    from owdedup.runtime.registry import import_target
    for target in importlib.import_module(holder).registry.targets():
        try:
            import_target(target)
            report["targets"][target] = "ok"
        except Exception as exc:
            report["targets"][target] = f"{type(exc).__name__}: {exc}"
if request.get("code_digests"):
    from owdedup.runtime.functions import registry
    from owdedup.runtime.identity import code_digest
    report["code_digests"] = {f.name: code_digest(f.code_module) for f in registry.all()}
if "identity" in request:
    from owdedup.runtime.functions import get_function
    spec = get_function("thumbnail")
    variants = spec.variants(spec.normalise(request["identity"]))
    report["identity"] = [v.function_id for v in variants]
if "params" in request:
    report["result"] = launcher.call(launcher.load_main("main"), request["params"])
report["modules"] = {
    name: os.path.realpath(module.__file__)
    for name, module in list(sys.modules.items())
    if isinstance(getattr(module, "__file__", None), str)
}
with open(report_file, "w") as f:
    json.dump(report, f)
'''


# Fixtures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Builds:
    first: dict[str, BuiltZip]
    second: dict[str, BuiltZip]


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    """Every zip, built twice into fresh folders (the second build reuses the cache)."""
    root = tmp_path_factory.mktemp("zips")
    first = build.build_actions(MANIFEST, root / "a", log=lambda _: None)
    second = build.build_actions(MANIFEST, root / "b", log=lambda _: None)
    return Builds({z.name: z for z in first}, {z.name: z for z in second})


@pytest.fixture(scope="session")
def zips(builds: Builds) -> dict[str, BuiltZip]:
    return builds.first


@pytest.fixture(scope="session")
def base_python() -> str:
    """The interpreter the project venv was made from: no project packages on its path."""
    return need_base_python()


@pytest.fixture(scope="session")
def unpacked(zips: dict[str, BuiltZip], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each zip unpacked as the runtime's `compile` leaves it (__main__.py -> main__.py,
    the launcher as exec__.py), by the one unpacker serve uses too."""
    root = tmp_path_factory.mktemp("actions")
    for name, item in zips.items():
        unpack(item.path, root / name)
    return root


@dataclass
class Runner:
    python: str
    runtime_site: Path
    actions: Path
    work: Path
    count: int = 0

    def __call__(self, action: str, request: Mapping[str, Any], *,
                 action_dir: Path | None = None) -> dict[str, Any]:
        self.count += 1
        folder = action_dir or self.actions / action
        request_file = self.work / f"request-{self.count}.json"
        report_file = self.work / f"report-{self.count}.json"
        request_file.write_text(json.dumps(request))
        done = subprocess.run(
            [self.python, "-I", "-S", "-c", PROBE, str(folder), str(self.runtime_site),
             str(request_file), str(report_file)],
            cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{action} failed:\n{done.stderr[-3000:]}")
        report: dict[str, Any] = json.loads(report_file.read_text())
        check_origins(report, folder, self.runtime_site)
        return report


@pytest.fixture
def run(base_python: str, runtime_site: Path, unpacked: Path, tmp_path: Path) -> Runner:
    return Runner(base_python, runtime_site, unpacked, tmp_path)


def check_origins(report: Mapping[str, Any], action_dir: Path, runtime_site: Path) -> None:
    """Every module came from the zip, the runtime's site-packages or the standard library."""
    stdlib = Path(report["stdlib"])
    allowed = (action_dir.resolve(), runtime_site.resolve(), stdlib)
    for name, origin in report["modules"].items():
        path = Path(origin)
        assert any(root in path.parents for root in allowed), f"{name} from {path}"
        assert stdlib / "site-packages" not in path.parents, f"{name} from {path}"


def members(item: BuiltZip) -> list[str]:
    with zipfile.ZipFile(item.path) as archive:
        return archive.namelist()


def site_names(item: BuiltZip) -> set[str]:
    """Top-level names in the zip's site-packages."""
    prefix = SITE_PACKAGES + "/"
    return {name[len(prefix):].split("/")[0] for name in members(item)
            if name.startswith(prefix) and len(name) > len(prefix)}


def needs(action: str, distribution: str) -> bool:
    return distribution in action_requirements()[action]


# The zips ---------------------------------------------------------------------------------


def test_every_zip_action_is_built(zips: dict[str, BuiltZip]) -> None:
    assert sorted(zips) == sorted(ACTIONS)
    for name, item in zips.items():
        assert item.path.name == f"{name}.zip"
        assert item.bytes == item.path.stat().st_size
        assert item.sha256 == hashlib.sha256(item.path.read_bytes()).hexdigest()


def test_builds_are_reproducible(builds: Builds) -> None:
    for name, item in builds.first.items():
        again = builds.second[name]
        assert again.path != item.path
        assert again.path.read_bytes() == item.path.read_bytes(), name


def test_layout(zips: dict[str, BuiltZip]) -> None:
    for name, item in zips.items():
        with zipfile.ZipFile(item.path) as archive:
            names = archive.namelist()
            assert names == sorted(names)
            assert archive.read("__main__.py") == (PROJECT / "actions" / f"{name}.py").read_bytes()
            assert "owdedup/__init__.py" in names
            assert ACTIVATE_THIS in names
            assert f"{SITE_PACKAGES}/" in names
            # identity.py hashes thumbnail.py's bytes, even where Pillow is absent (wherever
            # identities are computed: not in dispatch, which only starts sequences)
            thumbnail = PROJECT / "lib" / "owdedup" / "runtime" / "thumbnail.py"
            assert ("owdedup/runtime/identity.py" in names) == (name != "dispatch"), name
            if name != "dispatch":
                assert archive.read("owdedup/runtime/thumbnail.py") == thumbnail.read_bytes()
            for info in archive.infolist():
                assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
                mode = info.external_attr >> 16 & 0o777
                assert mode in (0o644, 0o755), (info.filename, oct(mode))
                assert not info.filename.startswith("/") and ".." not in info.filename
            # bytecode: exactly one pyc per .py but __main__.py (and thumbnail.py where there
            # is no Pillow to import it with), and nothing else cached
            sources = {n for n in names if n.endswith(".py") and n != "__main__.py"}
            if not needs(name, "pillow"):
                sources.discard("owdedup/runtime/thumbnail.py")
            cached = {n for n in names if "__pycache__" in n.split("/") or n.endswith(".pyc")}
            assert {n for n in cached if not n.endswith("/")} == {
                zipper.pyc_name(n) for n in sources}, name


def test_the_bytecode_is_checked_hash_based_on_the_shipped_sources(
    zips: dict[str, BuiltZip]
) -> None:
    for item in zips.values():
        with zipfile.ZipFile(item.path) as archive:
            for source in archive.namelist():
                if not source.endswith(".py") or source == "__main__.py":
                    continue
                if zipper.pyc_name(source) not in archive.namelist():
                    continue  # a code module carried for its bytes (test_layout)
                pyc = archive.read(zipper.pyc_name(source))
                assert pyc[:4] == importlib.util.MAGIC_NUMBER, source
                assert int.from_bytes(pyc[4:8], "little") == 0b11, source  # hash, checked
                assert pyc[8:16] == importlib.util.source_hash(archive.read(source)), source


def test_bytecode_is_reproducible_and_per_file(tmp_path: Path) -> None:
    """Each file's bytecode depends on its source and name only, not on what else the
    compiler process compiled (nor on hash randomisation: frozenset constants)."""
    root = PROJECT / "lib"
    files = {p.relative_to(root).as_posix(): p.read_bytes()
             for p in sorted((root / "owdedup").rglob("*.py"))}
    files["x/sets.py"] = b"def f(x):\n    return x in {'a', 'b', 'c', 'd', 'e', 'f'}\n"
    every = zipper.compile_bytecode(files)
    some = zipper.compile_bytecode({n: c for n, c in list(files.items())[::-3]})
    assert some and all(every[name] == pyc for name, pyc in some.items())
    assert "x/__pycache__/sets.cpython-311.pyc" in every


def test_bytecode_needs_cpython_3_11(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "version_info", (3, 12, 1, "final", 0))
    with pytest.raises(BuildError, match=r"build them with CPython 3\.11"):
        zipper.check_build_python()
    with pytest.raises(BuildError, match=r"CPython 3\.11"):
        zipper.compile_bytecode({"a.py": b""})


def test_no_cli_or_tooling_inside(zips: dict[str, BuiltZip]) -> None:
    for name, item in zips.items():
        shipped = [n for n in members(item) if n.startswith("owdedup/") and not n.endswith("/")]
        leaked = [n for n in shipped if not n.startswith(("owdedup/runtime/", "owdedup/__init__",
                                                          "owdedup/__pycache__/__init__"))]
        assert not leaked, f"{name}: {leaked}"
        assert not any(n.endswith(("mapper.py", "watch.py", "workers.py")) for n in shipped)


def test_pillow_only_in_the_thumbnail_zip(zips: dict[str, BuiltZip]) -> None:
    for name in HIT_PATH:
        assert "PIL" not in site_names(zips[name]), name
    assert {"PIL", "pillow.libs"} <= site_names(zips["thumbnail"])


def test_only_what_the_action_needs_and_the_runtime_lacks(zips: dict[str, BuiltZip]) -> None:
    for name, item in zips.items():
        top = site_names(item)
        assert ("minio" in top) == needs(name, "minio"), name
        assert ("ibmcloudant" in top) == needs(name, "ibmcloudant"), name
        for shipped_by_runtime in ("urllib3", "certifi", "idna", "six"):
            assert shipped_by_runtime not in top, (name, shipped_by_runtime)
        # The runtime's requests 2.32.2 and python-dateutil 2.8 are too old for ibmcloudant:
        # the zips that need it carry their own.
        assert ("requests" in top) == needs(name, "ibmcloudant"), name
        assert ("dateutil" in top) == needs(name, "ibmcloudant"), name
        # left out by PACKAGE_TRIMS["minio"]: only minio's admin client needs them
        assert not top & {"Crypto", "argon2", "_argon2_cffi_bindings", "cffi", "pycparser"}
        assert not any(n.startswith("_cffi_backend") for n in top), name
    assert site_names(zips["dispatch"]) == set()


def test_minio_ships_without_its_admin_client(zips: dict[str, BuiltZip]) -> None:
    with zipfile.ZipFile(zips["hash"].path) as archive:
        init = archive.read(f"{SITE_PACKAGES}/minio/__init__.py").decode()
        names = set(archive.namelist())
    assert "minioadmin" not in init.replace("owdedup: MinioAdmin left out", "")
    assert "from .api import Minio as Minio" in init
    for removed in PACKAGE_TRIMS["minio"].remove:
        assert f"{SITE_PACKAGES}/{removed}" not in names
    plan = plan_build(MANIFEST, only=["hash"])
    (action,) = plan.actions
    assert set(action.trimmed) == {"argon2-cffi", "argon2-cffi-bindings", "cffi", "pycparser",
                                   "pycryptodome"}
    assert "minio" in {pin.name for pin in action.packages}


def test_a_trim_that_no_longer_fits_fails_the_build() -> None:
    minio = Pin("minio", "9.9.9")
    init = f"{SITE_PACKAGES}/minio/__init__.py"
    removed = {f"{SITE_PACKAGES}/{r}": b"" for r in PACKAGE_TRIMS["minio"].remove}
    with pytest.raises(BuildError, match=r"minio==9\.9\.9.*does not hold"):
        install.apply_trims({init: b"from .api import Minio\n", **removed}, [minio])
    with pytest.raises(BuildError, match=r"no minio/crypto\.py"):
        install.apply_trims({init: b"", f"{SITE_PACKAGES}/minio/minioadmin.py": b""}, [minio])
    files = {init: b"from .minioadmin import MinioAdmin as MinioAdmin\n", **removed}
    install.apply_trims(files, [minio])
    assert list(files) == [init] and b"import" not in files[init]
    untouched = {"x": b"y"}
    install.apply_trims(untouched, [Pin("pillow", "1")])
    assert untouched == {"x": b"y"}


def test_shipped_code_importing_a_trimmed_package_fails_the_build() -> None:
    ok = {f"{SITE_PACKAGES}/a.py": b"import json\nfrom .cffi import x\n"}
    install.check_trimmed_imports(ok, ["cffi", "pycryptodome"])
    for source in (b"def f():\n    from Crypto.Cipher import AES\n", b"import _cffi_backend\n"):
        with pytest.raises(BuildError, match="imports what PACKAGE_TRIMS left out"):
            install.check_trimmed_imports({"b.py": source}, ["cffi", "pycryptodome"])


def test_pins_equal_the_pillow_in_the_thumbnail_zip(zips: dict[str, BuiltZip]) -> None:
    (dist_info,) = [n for n in site_names(zips["thumbnail"]) if n.startswith("pillow-")]
    shipped = dist_info.removeprefix("pillow-").removesuffix(".dist-info")
    for name, item in zips.items():
        with zipfile.ZipFile(item.path) as archive:
            assert json.loads(archive.read(PINS_FILE)) == {"pillow": shipped}, name


def test_sizes(zips: dict[str, BuiltZip]) -> None:
    report = size_report(list(zips.values()))
    for name, item in zips.items():
        assert item.bytes < MAX_ZIP_BYTES
        assert name in report
    print("\n" + report)


def test_plan_builds_nothing(tmp_path: Path) -> None:
    plan = plan_build(MANIFEST, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert [a.name for a in plan.actions] == list(ACTIONS)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    by_name = {a.name: a for a in plan.actions}
    assert by_name["hash"].source == PROJECT / "actions" / "hash.py"
    assert by_name["hash"].zip_path == tmp_path / "out" / "hash.zip"
    assert {p.name for p in by_name["thumbnail"].packages} >= {"minio", "pillow"}
    assert {p.name for p in by_name["lookup"].packages} >= {"minio", "ibmcloudant"}
    assert by_name["dispatch"].packages == ()
    assert "requests" in {p.name for p in by_name["lookup"].packages}
    assert any("requests" in note for note in by_name["lookup"].conflicts)
    assert "owdedup/runtime/thumbnail.py" in by_name["hash"].modules
    assert plan.pins == {"pillow": installed_version("pillow")}
    json.dumps(plan.to_dict())  # the plan is plain data
    plan_only = plan_build(MANIFEST, only=["hash"])
    assert [a.name for a in plan_only.actions] == ["hash"]
    with pytest.raises(BuildError, match="no zip action named nope"):
        plan_build(MANIFEST, only=["nope"])


def test_dry_run_prints_the_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert build.main([str(MANIFEST), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "thumbnail" in out and "pillow==" in out and not (tmp_path / "out").exists()


def test_an_action_importing_tooling_is_refused(tmp_path: Path) -> None:
    action = tmp_path / "bad.py"
    action.write_text("def main(params):\n    from owdedup.cli import app\n    return {}\n")
    package_dir = PROJECT / "lib" / "owdedup"
    with pytest.raises(BuildError, match=r"owdedup\.cli, which is CLI/tooling"):
        runtime_modules(action, package_dir)


def test_registry_strings_pull_in_backends() -> None:
    modules = runtime_modules(PROJECT / "actions" / "lookup.py", PROJECT / "lib" / "owdedup")
    assert {"owdedup/runtime/records/couchdb.py", "owdedup/runtime/stores/s3.py"} <= set(modules)


def test_a_runtime_package_too_old_for_a_requirement_is_shipped() -> None:
    pins, provided, conflicts = resolve_packages(
        ["ibmcloudant"], {**RUNTIME_PACKAGES, "requests": "2.0.0"}
    )
    assert "requests" not in provided and "requests" in {p.name for p in pins}
    assert any("requests" in c and "2.0.0" in c for c in conflicts)
    trimmed = {p.name for p in resolve_packages(["minio"])[0]}
    untrimmed = {p.name for p in resolve_packages(["minio"], trims={})[0]}
    assert untrimmed - trimmed == {"argon2-cffi", "argon2-cffi-bindings", "cffi", "pycparser",
                                   "pycryptodome"}
    pins, provided, _ = resolve_packages(
        ["ibmcloudant"], {**RUNTIME_PACKAGES, "requests": "2.99.0",
                          "python-dateutil": "2.99.0"})
    assert "requests" in provided and "requests" not in {p.name for p in pins}


def test_activate_this_template_placeholders() -> None:
    rendered = install.render_activate_this('BIN = "__BIN_NAME__"\nLIBS = "__LIB_FOLDERS__"\n')
    assert rendered == 'BIN = "bin"\nLIBS = "../lib/python3.11/site-packages"\n'
    with pytest.raises(BuildError, match="unknown placeholders"):
        install.render_activate_this('X = "__SOMETHING_NEW__"\n')
    with pytest.raises(BuildError, match="absolute path"):
        install.render_activate_this('X = "__VIRTUAL_ENV__"\n')


# Each zip alone, as the runtime runs it ---------------------------------------------------


def _owdedup_modules(item: BuiltZip) -> list[str]:
    return [n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            for n in members(item) if n.startswith("owdedup/") and n.endswith(".py")]


def _owdedup_modules_of(folder: Path) -> list[str]:
    return [p.relative_to(folder).with_suffix("").as_posix().removesuffix("/__init__")
            .replace("/", ".") for p in (folder / "owdedup").rglob("*.py")]


def test_every_module_of_every_zip_imports(run: Runner, zips: dict[str, BuiltZip]) -> None:
    """Everything imports but what needs a package the action does not ship and never uses
    (thumbnail.py travels for its source bytes only; dispatch never opens a store)."""
    for name, item in zips.items():
        shipped = _owdedup_modules(item)
        report = run(name, {"try_import": shipped})
        expected = {}
        if not needs(name, "pillow"):
            expected["owdedup.runtime.thumbnail"] = "PIL"
        if not needs(name, "minio"):
            expected["owdedup.runtime.stores.s3"] = "minio"
        expected = {module: missing for module, missing in expected.items() if module in shipped}
        assert report["failed"] == expected, name


def _registry_check(run: Runner, action: str, folder: Path | None = None) -> dict[str, Any]:
    """Inside the unpacked zip, through the runtime's launcher: every target of every
    registry the zip carries imported by name, and every function's code digest."""
    modules = set(_owdedup_modules_of(folder or run.actions / action))
    holders = [holder for holder in REGISTRY_MODULES if holder in modules]
    return run(action, {"registries": holders, "code_digests": bool(holders)},
               action_dir=folder)


def test_every_module_a_registry_names_is_in_the_zip(
    run: Runner, zips: dict[str, BuiltZip]
) -> None:
    """Registries import backends and plug-ins by name, and identities hash code modules
    that nothing imports: an import scan alone would miss them. Run inside each zip, each
    target imports, but a backend whose client the zip lacks (left out by the plan, and
    refused by the registry naming it), and each code digest is the source's here."""
    plans = {a.name: a for a in plan_build(MANIFEST).actions}
    digests = {name: code_digest(get_function(name).code_module) for name in ("thumbnail",)}
    for name in zips:
        report = _registry_check(run, name)
        left_out = {entry.split()[0] for entry in plans[name].left_out}
        for target, outcome in report["targets"].items():
            module = target.partition(":")[0]
            if module in left_out:
                assert outcome.startswith(f"ConfigError: cannot import {target}: no module "
                                          f"{module}"), (name, target, outcome)
            else:
                assert outcome == "ok", (name, target, outcome)
        assert report.get("code_digests", digests) == digests, name
    # every backend can be imported where a registry is: CouchDB's default transport is
    # urllib3 (the runtime's); dispatch reaches no registry
    assert all(plan.left_out == () for plan in plans.values())
    assert not any(h.replace(".", "/") in " ".join(plans["dispatch"].modules)
                   for h in REGISTRY_MODULES)


def test_the_registry_check_catches_a_missing_module(
    run: Runner, unpacked: Path, tmp_path: Path
) -> None:
    """The check above can fail: the lookup zip without the couchdb backend, or without
    the thumbnail's code module, is caught."""
    for removed in ("records/couchdb", "thumbnail"):
        broken = tmp_path / removed.replace("/", "-")
        shutil.copytree(unpacked / "lookup", broken)
        source = broken / "owdedup" / "runtime" / f"{removed}.py"
        source.unlink()
        zipper_pyc = broken / zipper.pyc_name(source.relative_to(broken).as_posix())
        zipper_pyc.unlink(missing_ok=True)  # none shipped for thumbnail.py here
        if removed == "thumbnail":
            with pytest.raises(RuntimeError, match="cannot find the source of"):
                _registry_check(run, "lookup", broken)
        else:
            report = _registry_check(run, "lookup", broken)
            outcome = report["targets"]["owdedup.runtime.records.couchdb:CouchRecordStore"]
            assert outcome.startswith("ConfigError: cannot import"), outcome


def test_registry_modules_names_every_registry_of_the_runtime() -> None:
    """The planner follows the registries REGISTRY_MODULES names: a new one must be listed."""
    runtime = PROJECT / "lib" / "owdedup" / "runtime"
    found = set()
    for path in sorted(runtime.rglob("*.py")):
        parts = path.relative_to(runtime.parent.parent).with_suffix("").parts
        module = ".".join(parts).removesuffix(".__init__")
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, Registry | FunctionRegistry):
                found.add(id(value))
    listed = {id(importlib.import_module(holder).registry) for holder in REGISTRY_MODULES}
    assert found == listed
    assert all(registry_needs()[holder] for holder in REGISTRY_MODULES)


def test_hit_path_zips_are_no_bigger_than_before_issue_7(zips: dict[str, BuiltZip]) -> None:
    for name, ceiling in ZIP_CEILINGS.items():
        assert zips[name].bytes <= ceiling, (name, zips[name].bytes, ceiling)


def test_each_zip_carries_what_its_action_can_import() -> None:
    """Not the whole runtime: the conductor's wrapped/ only in the dedup zip, event parsing
    only in dispatch; the function plug-ins and the code modules wherever jobs are read."""
    plans = {a.name: a for a in plan_build(MANIFEST).actions}
    wrapped = "owdedup/runtime/wrapped/conductor.py"
    for name, plan in plans.items():
        modules = set(plan.modules)
        assert wrapped not in modules, name
        assert ("owdedup/runtime/events.py" in modules) == (name == "dispatch"), name
        if name == "dispatch":  # it parses events and calls the platform, nothing else
            assert modules == {f"owdedup/{m}.py" for m in (
                "__init__", "runtime/__init__", "runtime/dispatch", "runtime/env",
                "runtime/errors", "runtime/events", "runtime/platform")}
            continue
        assert {"owdedup/runtime/functions/thumbnail.py", "owdedup/runtime/thumbnail.py",
                "owdedup/runtime/stores/folder.py", "owdedup/runtime/records/sqlite.py",
                "owdedup/__init__.py", "owdedup/runtime/__init__.py"} <= modules, name
    # the compute step claims its work and records in the record store, with any auth
    assert "owdedup/runtime/records/couchdb.py" in plans["thumbnail"].modules
    assert {p.name for p in plans["thumbnail"].packages} >= {"minio", "ibmcloudant", "pillow"}
    conductor = build.plan_standalone("dedup", PROJECT).actions[0]
    assert wrapped in conductor.modules and conductor.left_out == ()
    assert "owdedup/runtime/functions/__init__.py" not in conductor.modules


@pytest.fixture
def photo_store(tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = tmp_path / "store"
    (store / "b").mkdir(parents=True)
    (store / "b" / "k").write_bytes(jpeg(64, 48))
    yield {"store": f"file://{store}", "records": f"sqlite://{tmp_path / 'r.sqlite'}",
           "dest_bucket": "out"}
    shutil.rmtree(store)


def _forced(action: str) -> dict[str, list[str]]:
    """Force the lazy imports of the clients the action ships (no service is contacted)."""
    request: dict[str, list[str]] = {"import": [], "call": []}
    if needs(action, "minio"):
        request["import"] += ["minio", "owdedup.runtime.stores.s3"]
    if needs(action, "ibmcloudant"):
        request["import"] += ["ibmcloudant.cloudant_v1"]
        request["call"] += ["owdedup.runtime.records.couchdb:_sdk"]
    return request


def test_the_sequence_runs_on_the_zips_alone(
    run: Runner, photo_store: dict[str, Any]
) -> None:
    """hash -> lookup -> thumbnail -> record, each in its own fresh process, twice: the second
    time lookup (which has no Pillow) finds what thumbnail recorded, so both computed the same
    function identity."""
    bound = photo_store  # each action's bound (package) parameters; the payload wins
    expected_ids = [v.function_id for v in get_function("thumbnail").variants(
        get_function("thumbnail").normalise({"sizes": [32]}))]
    for attempt, status in enumerate(("computed", "deduplicated")):
        payload: dict[str, Any] = {"bucket": "b", "key": "k", "sizes": [32]}
        reports: dict[str, dict[str, Any]] = {}
        for action in ("hash", "lookup", "thumbnail", "record"):
            request = {**_forced(action), "identity": {"sizes": [32]},
                       "params": {**bound, **payload}}
            reports[action] = report = run(action, request)
            payload = report["result"]
            assert "error" not in payload, (action, payload)
            assert report["identity"] == expected_ids, action
        assert payload["status"] == status
        assert not any(m == "PIL" or m.startswith("PIL.") for m in reports["hash"]["modules"])
        assert "PIL" not in reports["lookup"]["modules"]
        thumbnail_modules = reports["thumbnail"]["modules"]
        if attempt == 0:
            assert "/virtualenv/lib/python3.11/site-packages/PIL/" in thumbnail_modules["PIL"]
        else:
            assert "PIL" not in thumbnail_modules  # all hits: Pillow is never imported
        for action in ("lookup", "record"):
            origin = reports[action]["modules"]["ibmcloudant"]
            assert "/virtualenv/lib/python3.11/site-packages/ibmcloudant/" in origin
            requests_origin = reports[action]["modules"]["requests"]
            assert "/virtualenv/lib/python3.11/site-packages/requests/" in requests_origin
    (output,) = payload["outputs"]
    stored = Path(bound["store"].removeprefix("file://")) / "out" / output["key"]
    assert stored.stat().st_size == output["bytes"] > 0


def test_dispatch_reaches_the_api_through_the_runtime_requests(run: Runner) -> None:
    with socket.socket() as sock:  # a local port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = run("dispatch", {
        "env": {"__OW_API_HOST": f"http://127.0.0.1:{port}", "__OW_API_KEY": "user:pass",
                "__OW_NAMESPACE": "_"},
        "params": {**minio_event("a.jpg", bucket="photos"), "dest_bucket": "out"},
    })
    result = report["result"]
    assert "could not start owdedup/dedup-thumbnail" in result["error"]
    assert "/runtime-site" in report["modules"]["requests"]
    assert not any(m.startswith(("PIL", "minio", "ibmcloudant")) for m in report["modules"])


def test_a_zip_missing_a_package_fails_here(
    run: Runner, unpacked: Path, tmp_path: Path, photo_store: dict[str, Any]
) -> None:
    """The harness sees nothing of the development environment: without its minio, the
    lookup zip cannot even start."""
    broken = tmp_path / "broken-lookup"
    shutil.copytree(unpacked / "lookup", broken)
    shutil.rmtree(broken / SITE_PACKAGES / "minio")
    with pytest.raises(RuntimeError, match="No module named 'minio'"):
        run("lookup", {**_forced("lookup"), "params": photo_store}, action_dir=broken)


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_fresh_unpack_runs_on_the_shipped_bytecode(
    run: Runner, zips: dict[str, BuiltZip], tmp_path: Path, photo_store: dict[str, Any]
) -> None:
    """Unzipped afresh (no timestamps kept), the action imports everything it needs from the
    shipped pycs: Python writes none and rewrites none (it would, were one stale or not
    taken), but main__'s (the runtime renames __main__.py, so the zip cannot carry it). The
    same run without the shipped pycs writes them: the check can fail."""
    request = {**_forced("lookup"), "params": {**photo_store, "bucket": "b", "key": "k"}}
    for ship_bytecode in (True, False):
        folder = unpack(zips["lookup"].path, tmp_path / f"lookup-{ship_bytecode}")
        if not ship_bytecode:
            for cache in list(folder.rglob("__pycache__")):
                shutil.rmtree(cache)
        before = _tree(folder)
        report = run("lookup", request, action_dir=folder)
        assert "minio" in report["modules"] and "ibmcloudant" in report["modules"]
        after = _tree(folder)
        changed = {n for n in after if before.get(n) != after[n]} - {"exec__.py"}
        if ship_bytecode:
            assert changed == {"__pycache__/main__.cpython-311.pyc"}
            assert set(before) - set(after) == set()
        else:
            assert f"{SITE_PACKAGES}/minio/__pycache__/api.cpython-311.pyc" in changed
            assert "owdedup/runtime/__pycache__/pipeline.cpython-311.pyc" in changed


def test_bytecode_keeps_line_numbers_but_no_column_ranges() -> None:
    """Compiled with -X no_debug_ranges (a quarter smaller): tracebacks from a zip still
    name file and line, without the ^^^ column markers."""
    import marshal

    pyc = zipper.compile_bytecode({"m.py": b"x = 1\n\ndef f(a):\n    return a.b + 1\n"})
    code = marshal.loads(pyc["__pycache__/m.cpython-311.pyc"][16:])
    (function,) = [c for c in code.co_consts if hasattr(c, "co_positions")]
    positions = [p for p in function.co_positions() if p[0] is not None]
    assert {p[0] for p in positions} >= {3, 4}
    assert all(p[2] is None and p[3] is None for p in positions)
