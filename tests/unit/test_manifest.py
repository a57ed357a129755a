from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from owdedup.engine.manifest import load_manifest, substitute
from owdedup.runtime.errors import ConfigError
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
    """Credentials are bound from the deployer's environment ($VAR), never written here."""
    text = (PROJECT / "manifest.yaml").read_text()
    assert "minioadmin" not in text.lower()
    raw = yaml.safe_load(text)
    credential = re.compile(r"(access_key|secret|password|username|token|apikey)")
    bound = {}
    for package in raw["packages"].values():
        for where in [package, *(package.get("actions") or {}).values()]:
            for name, spec in (where.get("inputs") or {}).items():
                if credential.search(name):
                    value = spec.get("value") if isinstance(spec, dict) else spec
                    assert re.fullmatch(r"\$\{?[A-Z][A-Z0-9_]*\}?", str(value)), name
                    bound[name] = value
    assert bound == {"store_access_key": "$OWDEDUP_STORE_ACCESS_KEY",
                     "store_secret_key": "$OWDEDUP_STORE_SECRET_KEY",
                     "records_username": "$OWDEDUP_RECORDS_USERNAME",
                     "records_password": "$OWDEDUP_RECORDS_PASSWORD"}


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
