from __future__ import annotations

from pathlib import Path

import pytest

from owdedup.engine.manifest import load_manifest, substitute
from owdedup.errors import ConfigError
from tests.conftest import PROJECT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    return path


def test_project_manifest_declares_the_pipeline() -> None:
    manifest = load_manifest(PROJECT / "manifest.yaml", {"OWDEDUP_OUT_BUCKET": "thumbs"})
    package = manifest.packages["owdedup"]
    assert set(package.actions) == {"hash", "lookup", "thumbnail", "record", "dispatch"}
    assert package.sequences["dedup-thumbnail"].components == (
        "owdedup/hash", "owdedup/lookup", "owdedup/thumbnail", "owdedup/record")
    assert package.inputs["dest_bucket"] == "thumbs"
    assert all(a.runtime == "python:3.11" for a in package.actions.values())


def test_project_manifest_holds_no_secret_literal() -> None:
    text = (PROJECT / "manifest.yaml").read_text().lower()
    for word in ("password:", "secret_key:", "access_key:", "minioadmin", "apikey:"):
        assert word not in text


def test_unset_variable_becomes_empty_string() -> None:
    assert substitute("$UNSET_VAR_X", {}) == ""
    assert substitute("http://${HOST}:9000/$PATH_X", {"HOST": "h"}) == "http://h:9000/"


def test_unknown_keys_are_errors_like_wskdeploy(tmp_path: Path) -> None:
    path = write(tmp_path, """
packages:
  p:
    actions:
      a:
        function: a.py
        runtime: python:3.11
        memory: 128
""")
    with pytest.raises(ConfigError, match=r"unknown key.*memory"):
        load_manifest(path, {})


def test_sequence_actions_must_be_one_string(tmp_path: Path) -> None:
    path = write(tmp_path, """
packages:
  p:
    actions:
      a: {function: a.py}
    sequences:
      s:
        actions: [a, a]
""")
    with pytest.raises(ConfigError, match="comma-separated"):
        load_manifest(path, {})


def test_typed_inputs_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
packages:
  p:
    inputs:
      n: {type: integer, value: $N}
      flag: {type: boolean, default: true}
      plain: $PLAIN
    actions:
      a: {function: a.py}
""")
    manifest = load_manifest(path, {"N": "42", "PLAIN": "x"})
    assert manifest.packages["p"].inputs == {"n": 42, "flag": True, "plain": "x"}
    with pytest.raises(ConfigError, match="not of type integer"):
        load_manifest(path, {"N": "many"})
