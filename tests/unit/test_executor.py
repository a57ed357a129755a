"""The local executor against OpenWhisk's documented semantics."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from owdedup.engine.activation import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    SUCCESS,
    Activation,
    qualified_path,
)
from owdedup.engine.executor import Engine
from owdedup.engine.local import local_executor
from owdedup.runtime.errors import ConfigError, NotFoundError

MANIFEST = """
packages:
  p:
    inputs:
      who: package
      pkg_only: 1
    actions:
      echo:
        function: actions/echo.py
        inputs:
          who: action
      add:
        function: build/actions/add.zip
        runtime: python:3.11
        inputs:
          step: 10
      fail:
        function: actions/fail.py
      crash:
        function: actions/crash.py
      notdict:
        function: actions/notdict.py
    sequences:
      chain:
        actions: add, add, echo
      stops:
        actions: add, fail, add
      crashes:
        actions: add, crash, add
"""

ACTIONS = {
    "echo.py": 'def main(params):\n    print("echo called")\n    return dict(params)\n',
    "add.py": (
        "def main(params):\n"
        "    total = params.get('total', 0) + params['step']\n"
        "    return {'total': total, 'seen': sorted(params)}\n"
    ),
    "fail.py": "def main(params):\n    return {'error': 'bad thing', 'key': 'k'}\n",
    "crash.py": "def main(params):\n    raise RuntimeError('boom')\n",
    "notdict.py": "def main(params):\n    return 42\n",
}


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    (tmp_path / "manifest.yaml").write_text(MANIFEST)
    (tmp_path / "actions").mkdir()
    for name, code in ACTIONS.items():
        (tmp_path / "actions" / name).write_text(code)
    return local_executor(tmp_path / "manifest.yaml", {})


def test_payload_wins_over_action_over_package(engine: Engine) -> None:
    result = engine.invoke("p/echo", {"x": 1}).result
    assert result == {"who": "action", "pkg_only": 1, "x": 1}
    assert engine.invoke("p/echo", {"who": "payload"}).result["who"] == "payload"


def test_built_zip_path_runs_the_action_source(engine: Engine) -> None:
    assert engine.invoke("p/add", {}).result["total"] == 10


def test_sequence_chains_results_and_invocation_params_reach_only_the_first(
    engine: Engine,
) -> None:
    activation = engine.invoke("p/chain", {"only_first": True})
    assert activation.status == SUCCESS
    assert [c.name for c in activation.components] == ["p/add", "p/add", "p/echo"]
    first, second, _ = (c.result for c in activation.components)
    assert "only_first" in first["seen"]
    assert "only_first" not in second["seen"]
    # Each component still gets its own defaults: `step` re-bound, `total` chained.
    assert second["total"] == 20
    assert activation.result["total"] == 20 and activation.result["who"] == "action"


def test_error_result_ends_the_sequence(engine: Engine) -> None:
    activation = engine.invoke("p/stops", {})
    assert activation.status == APPLICATION_ERROR
    assert activation.result == {"error": "bad thing", "key": "k"}
    assert len(activation.components) == 2  # the last `add` never ran


def test_resume_runs_what_follows_the_first_step_on_its_result(engine: Engine) -> None:
    first = engine.invoke("p/add", {"only_first": True})
    activation = engine.resume("p/chain", "p/add", first.result)
    assert activation.status == SUCCESS and activation.name == "p/chain"
    assert [c.name for c in activation.components] == ["p/add", "p/echo"]
    assert activation.result["total"] == 20  # what invoking the whole sequence gives
    assert activation.result == engine.invoke("p/chain", {"only_first": True}).result


def test_resume_needs_a_sequence_that_starts_with_the_step(engine: Engine) -> None:
    with pytest.raises(ConfigError, match="not a sequence that starts with 'p/echo'"):
        engine.resume("p/chain", "p/echo", {})
    with pytest.raises(ConfigError, match="not a sequence"):
        engine.resume("p/add", "p/add", {})


def test_uncaught_exception_becomes_error_with_traceback_in_logs(engine: Engine) -> None:
    activation = engine.invoke("p/crash", {})
    assert activation.status == APPLICATION_ERROR  # as the Python runtime reports it
    assert activation.result == {"error": "boom"}
    assert any("Traceback" in line and "stderr" in line for line in activation.logs)
    sequence = engine.invoke("p/crashes", {})
    assert sequence.status == APPLICATION_ERROR and len(sequence.components) == 2


def test_non_dict_result_is_a_developer_error(engine: Engine) -> None:
    activation = engine.invoke("p/notdict", {})
    assert activation.status == DEVELOPER_ERROR
    assert "dictionary" in activation.result["error"]


def test_logs_ids_and_timing(engine: Engine) -> None:
    first, second = engine.invoke("p/echo", {}), engine.invoke("p/echo", {})
    assert first.activation_id != second.activation_id and len(first.activation_id) == 32
    assert any(line.endswith("stdout: echo called") for line in first.logs)
    doc = first.to_dict()
    assert doc["response"]["success"] is True and doc["response"]["statusCode"] == 0
    assert doc["end"] >= doc["start"] and doc["name"] == "echo"
    seq = engine.invoke("p/chain", {}).to_dict()
    assert len(seq["logs"]) == 3  # a sequence's logs list its components' activation ids


def test_front_end_can_choose_the_activation_id(engine: Engine) -> None:
    # The REST server announces an id before the run ends; the record must carry that id.
    assert engine.invoke("p/echo", {}, activation_id="a" * 32).activation_id == "a" * 32
    sequence = engine.invoke("p/chain", {}, activation_id="b" * 32)
    assert sequence.activation_id == "b" * 32
    assert "b" * 32 not in {c.activation_id for c in sequence.components}


def test_unknown_entity(engine: Engine) -> None:
    with pytest.raises(NotFoundError, match="known: p/add"):
        engine.invoke("p/nope", {})


RULES_MANIFEST = """
packages:
  p:
    actions:
      echo:
        function: actions/echo.py
    triggers:
      uploaded: {}
    rules:
      a-gone:
        trigger: uploaded
        action: gone
      b-echo:
        trigger: uploaded
        action: echo
"""


def test_a_rule_whose_action_is_gone_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text(RULES_MANIFEST)
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "echo.py").write_text(ACTIONS["echo.py"])
    engine = local_executor(tmp_path / "manifest.yaml", {})
    trigger = engine.fire("uploaded", {"x": 1})
    assert trigger.success
    gone, echo = trigger.components
    assert gone.status == APPLICATION_ERROR and gone.name == "p/gone"
    assert "'p/gone'" in gone.result["error"] and "known" not in gone.result["error"]
    assert echo.success and echo.result == {"x": 1}


def test_qualified_path_and_activation_path_annotation() -> None:
    assert qualified_path("guest", "pkg/a") == "guest/pkg/a"
    assert qualified_path("guest", "/a") == "guest/a"
    assert qualified_path("guest", "/whisk.system/pkg/a") == "whisk.system/pkg/a"
    record = Activation("id", "guest", "/a", 0, 1, {}, SUCCESS).to_dict()
    assert {"key": "path", "value": "guest/a"} in record["annotations"]
    assert record["name"] == "a" and "package" not in record
    system = Activation("id", "guest", "/whisk.system/pkg/a", 0, 1, {}, SUCCESS).to_dict()
    assert {"key": "path", "value": "whisk.system/pkg/a"} in system["annotations"]
    assert system["package"] == "pkg"


ZIP_MANIFEST = """
packages:
  p:
    actions:
      zipped:
        function: actions/zipped.zip
        runtime: python:3.11
        main: handler
"""


def test_a_users_zip_is_unpacked_as_the_runtime_does_and_runs(tmp_path: Path) -> None:
    """A zip that deploy.sh did not build from actions/ runs from the runtime's unpacker's
    layout (__main__.py as main__.py, its own modules importable)."""
    (tmp_path / "manifest.yaml").write_text(ZIP_MANIFEST)
    (tmp_path / "actions").mkdir()
    with zipfile.ZipFile(tmp_path / "actions" / "zipped.zip", "w") as archive:
        archive.writestr("__main__.py", "import zipped_helper\n\n"
                                        "def handler(params):\n"
                                        "    return {'said': zipped_helper.say(params['x'])}\n")
        archive.writestr("zipped_helper.py", "def say(x):\n    return f'hello {x}'\n")
    activation = local_executor(tmp_path / "manifest.yaml", {}).invoke("p/zipped", {"x": 1})
    assert activation.status == SUCCESS, activation.result
    assert activation.result == {"said": "hello 1"}
