"""The function registry checks what it is given; the job, engine and deploy take what they
need from it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.deploy import needs, plan
from owdedup.deploy.build import plan_build
from owdedup.deploy.runtime import BuildError
from owdedup.engine import local
from owdedup.engine.local import FunctionCatalog
from owdedup.engine.manifest import load_manifest
from owdedup.runtime import functions
from owdedup.runtime.context import Context
from owdedup.runtime.errors import ConfigError
from owdedup.runtime.functions import FunctionRegistry, get_function
from owdedup.runtime.functions.thumbnail import ThumbnailFunction
from owdedup.runtime.job import Job
from owdedup.runtime.pipeline import compute_step, hash_step, lookup_step
from tests.conftest import PROJECT
from tests.functional.test_plugin_function import TARGET, Upper

BUILTINS = {"thumbnail": "owdedup.runtime.functions.thumbnail:ThumbnailFunction"}


@pytest.fixture
def with_upper(monkeypatch: pytest.MonkeyPatch) -> Iterator[FunctionRegistry]:
    """The built-ins plus ``upper``, in place of the process's registry."""
    registry = FunctionRegistry(BUILTINS, environ={})
    registry.register("upper", TARGET)
    for module in (functions, needs, local):
        monkeypatch.setattr(module, "registry", registry)
    yield registry


def test_unknown_function_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown function 'resize'; choose one of: thumbnail"):
        get_function("resize")


def test_a_function_is_imported_once_and_checked() -> None:
    registry = FunctionRegistry(BUILTINS, environ={})
    first = registry.get("thumbnail")
    assert isinstance(first, ThumbnailFunction) and registry.get("thumbnail") is first


class NoCompute:
    name = "nocompute"
    code_module = __name__
    libraries = parameters = requirements = ()

    def normalise(self, params: Any) -> Any: ...
    def variants(self, params: Any) -> Any: ...
    def check_input(self, read_prefix: Any, size: int, params: Any, *, name: str) -> None: ...


class ClaimsTheBucket(Upper):
    name = "claims"
    parameters = ("bucket", "suffix")


class Misnamed(Upper):
    name = "other"


class BadLibraries(Upper):
    name = "badlibs"
    libraries = "pillow"  # type: ignore[assignment]  # a string, not a tuple of names


@pytest.mark.parametrize(
    ("name", "target", "message"),
    [("nocompute", f"{__name__}:NoCompute", "is not a DedupFunction (missing compute)"),
     ("claims", f"{__name__}:ClaimsTheBucket", "parameters bucket belong to the job"),
     ("misnamed", f"{__name__}:Misnamed", "is named 'other', registered as 'misnamed'"),
     ("badlibs", f"{__name__}:BadLibraries", "libraries must be a tuple of names"),
     ("gone", "tests.no_such_module:Gone", "cannot import tests.no_such_module:Gone"),
     ("absent", f"{__name__}:Absent", f"{__name__} has no Absent")],
)
def test_what_is_not_a_function_is_refused_with_the_reason(
    name: str, target: str, message: str
) -> None:
    registry = FunctionRegistry(BUILTINS, environ={})
    registry.register(name, target)
    with pytest.raises(ConfigError, match=re.escape(message)):
        registry.get(name)


def test_a_name_cannot_change_its_code() -> None:
    registry = FunctionRegistry(BUILTINS, environ={})
    registry.register("upper", TARGET)
    registry.register("upper", TARGET)  # the same again: nothing changes
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("upper", f"{__name__}:Misnamed")
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("thumbnail", Upper())
    with pytest.raises(ConfigError, match="bad function name"):
        registry.register("Upper Case", TARGET)


def test_environment_registers_functions_and_refuses_a_malformed_entry() -> None:
    registry = FunctionRegistry(BUILTINS, environ={"OWDEDUP_FUNCTIONS": f" upper={TARGET} ,"})
    assert registry.names() == ["thumbnail", "upper"]
    assert isinstance(registry.get("upper"), Upper)
    broken = FunctionRegistry(BUILTINS, environ={"OWDEDUP_FUNCTIONS": TARGET})
    with pytest.raises(ConfigError, match=r"OWDEDUP_FUNCTIONS: .* is not name=module:Class"):
        broken.names()


def test_a_job_carries_only_its_function_parameters(with_upper: FunctionRegistry) -> None:
    params = {"bucket": "texts", "key": "a.txt", "function": "upper", "suffix": "!",
              "sizes": "64", "store_secret_key": "s3cr3t", "records_password": "pw"}
    assert Job.from_params(params).params == {"suffix": "!"}
    thumbnail = Job.from_params({**params, "function": "thumbnail"})
    assert thumbnail.params == {"sizes": "64"}
    with pytest.raises(ConfigError, match="unknown function 'resize'"):
        Job.from_params({**params, "function": "resize"})


def test_the_engine_adds_a_sequence_for_a_function_the_manifest_does_not_deploy(
    with_upper: FunctionRegistry
) -> None:
    catalog = FunctionCatalog(load_manifest(PROJECT / "manifest.yaml", {}))
    sequence = catalog.sequence("owdedup/dedup-upper")
    assert sequence is not None and sequence.components == (
        "owdedup/hash", "owdedup/lookup", "owdedup/upper", "owdedup/record")
    compute = catalog.action("owdedup/upper")
    assert compute is not None and compute.function == local.REGISTERED
    # What the manifest declares is its own: the thumbnail's action runs its action file.
    thumbnail = catalog.action("owdedup/thumbnail")
    assert thumbnail is not None and thumbnail.function == "build/actions/thumbnail.zip"
    assert "owdedup/dedup-upper" in catalog.entity_names()


def test_the_zip_planner_and_the_deploy_check_follow_the_registry(
    with_upper: FunctionRegistry, tmp_path: Path
) -> None:
    requirements = needs.action_requirements()
    # a compute action claims and records in the record store too (IAM auth: ibmcloudant)
    assert requirements["thumbnail"] == ("minio", "ibmcloudant", "pillow")
    assert requirements["upper"] == ("minio", "ibmcloudant")
    assert requirements["lookup"] == ("minio", "ibmcloudant")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("""
packages:
  owdedup:
    inputs:
      suffix: $OWDEDUP_SUFFIX
    actions:
      upper:
        function: build/actions/upper.zip
        runtime: python:3.11
""")
    # A function whose code is outside the runtime package cannot run from a zip (even with
    # its compute action's file in place).
    (tmp_path / "actions").mkdir(exist_ok=True)
    (tmp_path / "actions" / "upper.py").write_text(
        '"""Input: a job. Output: the job."""\nfrom owdedup.runtime.action import make_main\n'
        'from owdedup.runtime.pipeline import compute_step\n\nmain = make_main(compute_step)\n')
    with pytest.raises(BuildError, match=r"function upper: tests\.functional\..* is not in "
                                         r"owdedup\.runtime"):
        plan_build(manifest, tmp_path / "zips", cache_dir=tmp_path / "cache")
    problems = plan.variable_problems({"OWDEDUP_SUFFIX": "far-too-long"}, manifest=manifest)
    assert "OWDEDUP_SUFFIX: bad suffix 'far-too-long': at most 8 characters" in problems
    assert f"{manifest}: the action upper needs the sequence dedup-upper = hash, lookup, " \
           "upper, record" in problems
    manifest.write_text(manifest.read_text() + """
      hash: {function: build/actions/hash.zip, runtime: python:3.11}
      lookup: {function: build/actions/lookup.zip, runtime: python:3.11}
      record: {function: build/actions/record.zip, runtime: python:3.11}
    sequences:
      dedup-upper:
        actions: hash, lookup, upper, record
""")
    assert not [p for p in plan.variable_problems({"OWDEDUP_SUFFIX": "!"}, manifest=manifest)
                if "upper" in p or "SUFFIX" in p]


def test_compute_never_writes_an_output_it_was_not_asked_for(
    with_upper: FunctionRegistry, context: Context, store_root: Path
) -> None:
    (store_root / "texts").mkdir()
    (store_root / "texts" / "a.txt").write_text("hi")
    job = Job.from_params({"bucket": "texts", "key": "a.txt", "dest_bucket": "out",
                           "function": "upper"})
    job = lookup_step(hash_step(job, context), context)
    job.outputs[0].function_id = "0" * 64  # a planned output that is no variant of upper
    with pytest.raises(ConfigError, match="upper made no output for the planned"):
        compute_step(job, context)
    assert not (store_root / "out").exists()


def test_the_thumbnail_identity_is_what_it_was_before_the_plug_ins() -> None:
    """The same inputs as before the registry (name, code module, libraries, chain, format,
    quality), so every record made before stays a hit."""
    from owdedup.runtime.identity import function_identity

    thumbnail = get_function("thumbnail")
    ids = [v.function_id for v in thumbnail.variants(thumbnail.normalise({"sizes": "64,128"}))]
    assert ids == [
        function_identity("thumbnail", "owdedup.runtime.thumbnail", ("pillow",),
                          {"chain": chain, "format": "jpeg", "quality": 85})
        for chain in ([128], [64, 128])
    ]
