"""A wrapped action declared in a wskdeploy manifest (the conductor as ``conductor: true``,
its configuration as ``owdedup_*`` inputs of a package of its own, so that no other
package input reaches it and through it the wrapped action) and run by the local
engine's conductor semantics (issue 10): miss, then hit under another name."""

from __future__ import annotations

import shutil
from pathlib import Path

from owdedup.engine.local import local_executor
from tests.conftest import PROJECT

MANIFEST = """
packages:
  user:
    actions:
      myfunction:
        function: myfunction.py
        runtime: python:3.11
  wrapped:
    inputs:
      owdedup_store:
        type: string
        value: $OWDEDUP_STORE
      owdedup_records:
        type: string
        value: $OWDEDUP_RECORDS
    actions:
      myfunction-dedup:
        function: build/actions/dedup.zip
        runtime: python:3.11
        conductor: true
        inputs:
          owdedup_action: user/myfunction
          owdedup_version: "1"
          owdedup_ignore: dest_bucket
        annotations:
          provide-api-key: true
          final: true
"""
CODE = """
RUNS = []

def main(params):
    RUNS.append(params["key"])
    return {"runs": len(RUNS), "key": params["key"]}
"""


def test_a_manifest_declared_conductor_runs_on_the_local_engine(
    tmp_path: Path, store_root: Path
) -> None:
    (tmp_path / "manifest.yaml").write_text(MANIFEST)
    (tmp_path / "myfunction.py").write_text(CODE)
    (tmp_path / "actions").mkdir()
    shutil.copy(PROJECT / "actions" / "dedup.py", tmp_path / "actions" / "dedup.py")
    (store_root / "photos" / "a.jpg").write_bytes(b"same")
    (store_root / "photos" / "b.jpg").write_bytes(b"same")
    env = {"OWDEDUP_STORE": f"file://{store_root}",
           "OWDEDUP_RECORDS": f"sqlite://{tmp_path / 'records.sqlite'}"}
    engine = local_executor(tmp_path / "manifest.yaml", env)
    first = engine.invoke("wrapped/myfunction-dedup",
                          {"bucket": "photos", "key": "a.jpg", "dest_bucket": "out"})
    assert first.success, first.result
    assert first.result["runs"] == 1 and first.result["owdedup"]["hit"] is False
    assert first.result["key"] == "a.jpg"
    second = engine.invoke("wrapped/myfunction-dedup",
                           {"bucket": "photos", "key": "b.jpg", "dest_bucket": "else"})
    assert second.success, second.result
    assert second.result["owdedup"]["hit"] is True
    assert second.result["runs"] == 1 and second.result["key"] == "a.jpg"  # the recorded one
