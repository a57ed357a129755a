"""A second function, defined here and registered by name only, runs through ``owdedup invoke``
and ``owdedup map`` (local executor, worker processes): no other module knows it.

It is registered for every process of the run through ``OWDEDUP_FUNCTIONS``; the manifest
does not deploy it, so the local engine runs it through the generic compute step in the
sequence ``dedup-upper`` it adds for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.errors import BadInputError, ConfigError
from owdedup.runtime.functions import Produced, Variant, identity_of
from owdedup.runtime.records import open_records
from tests.conftest import PROJECT

pytestmark = pytest.mark.functional

TARGET = f"{__name__}:Upper"


@dataclass(frozen=True)
class UpperParams:
    suffix: str

    def to_dict(self) -> dict[str, Any]:
        return {"suffix": self.suffix}


class Upper:
    """UTF-8 text in, the same text upper-cased (plus an optional suffix) out."""

    name = "upper"
    code_module = __name__  # this file's bytes are its identity's code digest
    libraries: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ("suffix",)
    requirements: tuple[str, ...] = ()

    def normalise(self, params: Mapping[str, Any]) -> UpperParams:
        suffix = str(params.get("suffix") or "")
        if len(suffix) > 8:
            raise ConfigError(f"bad suffix {suffix!r}: at most 8 characters")
        return UpperParams(suffix)

    def variants(self, params: UpperParams) -> list[Variant]:
        function_id = identity_of(self, params.to_dict())
        return [Variant("text", 0, function_id, ".txt", summary=params.to_dict())]

    def check_input(
        self, read_prefix: Callable[[int], bytes], size: int, params: UpperParams, *, name: str
    ) -> None:
        if size > 1 << 20:
            raise BadInputError("over 1 MiB of text", key=name)

    def compute(self, data: bytes, params: UpperParams, *, name: str) -> dict[str, Produced]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInputError("not UTF-8 text", key=name) from None
        return {"text": Produced((text.upper() + params.suffix).encode(), "text/plain")}


class Cli:
    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        pythonpath = os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))
        self.cwd = cwd
        self.env = {**os.environ, **env, "OWDEDUP_FUNCTIONS": f"upper={TARGET}",
                    "PYTHONPATH": pythonpath}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "owdedup", *args], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=300)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc


@pytest.fixture
def cli(tmp_path: Path, env: dict[str, str]) -> Cli:
    return Cli(tmp_path, env)


@pytest.fixture
def texts(store_root: Path) -> Path:
    folder = store_root / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    (folder / "b.txt").write_text("world")
    (folder / "copy-of-a.txt").write_text("hello")
    (folder / "binary.txt").write_bytes(b"\xff\xfe\x00")
    return folder


def read_output(store_root: Path, output: Mapping[str, Any]) -> str:
    return (store_root / str(output["bucket"]) / str(output["key"])).read_text()


def test_invoke_runs_a_function_registered_by_name_only(
    cli: Cli, store_root: Path, texts: Path, env: dict[str, str]
) -> None:
    first = cli("invoke", "upper", "texts/a.txt", "out")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert (result["function"], result["status"]) == ("upper", "computed")
    (output,) = result["outputs"]
    assert output["key"].startswith("upper/text/") and output["key"].endswith(".txt")
    assert read_output(store_root, output) == "HELLO"
    records = open_records(env["OWDEDUP_RECORDS"]).stats()
    assert [(s.function, s.records) for s in records] == [("upper", 1)]

    # The same content under another name: deduplicated, the same stored output.
    again = json.loads(cli("invoke", "upper", "texts/copy-of-a.txt", "out").stdout)
    assert again["status"] == "deduplicated" and again["outputs"][0]["key"] == output["key"]

    # Its own parameter, given with --param, is part of its identity.
    loud = json.loads(cli("invoke", "upper", "texts/a.txt", "out", "--param", "suffix=!").stdout)
    assert loud["status"] == "computed" and loud["outputs"][0]["key"] != output["key"]
    assert read_output(store_root, loud["outputs"][0]) == "HELLO!"


def test_map_runs_it_in_worker_processes(cli: Cli, store_root: Path, texts: Path) -> None:
    proc = cli("map", "upper", "texts", "out", "--workers", "2", "--results", "r.jsonl", "-q")
    assert proc.returncode == 1  # binary.txt is not text: it fails alone
    rows = {row["key"]: row for row in map(json.loads, (cli.cwd / "r.jsonl").read_text()
                                           .splitlines())}
    assert {key: row["status"] for key, row in rows.items()} == {
        "a.txt": "computed", "copy-of-a.txt": "deduplicated", "b.txt": "computed",
        "binary.txt": "failed"}
    assert rows["binary.txt"]["error"] == "binary.txt: not UTF-8 text"
    assert read_output(store_root, rows["b.txt"]["outputs"][0]) == "WORLD"
    assert rows["copy-of-a.txt"]["outputs"][0]["key"] == rows["a.txt"]["outputs"][0]["key"]
    assert not any("binary" in path.name for path in (store_root / "out").rglob("*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--size", "64"], "upper takes no sizes; its parameters: suffix"),
     (["--param", "colour=red"], "bad --param 'colour=red'"),
     (["--param", "suffix=much-too-long"], "bad suffix 'much-too-long'")],
)
def test_parameters_it_does_not_take_are_refused(
    cli: Cli, texts: Path, args: list[str], message: str
) -> None:
    proc = cli("map", "upper", "texts", "out", *args)
    assert proc.returncode == 1
    assert message in proc.stdout + proc.stderr
