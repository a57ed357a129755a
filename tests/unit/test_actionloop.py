"""The one launcher and unpacker (:mod:`owdedup.actionloop`) and the proxy's bounded log
reading, without a server."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, cast

import pytest

from owdedup.actionloop import launcher
from owdedup.actionloop.code import CodeError, unpack
from owdedup.actionloop.proxy import _MARKER, LogCollector


def test_unpack_lays_out_code_as_compile_does(tmp_path: Path) -> None:
    source = tmp_path / "action.py"
    source.write_text("def main(p):\n    return p\n")
    folder = unpack(source, tmp_path / "src")
    assert sorted(p.name for p in folder.iterdir()) == ["exec__.py", "main__.py"]
    assert (folder / "exec__.py").read_bytes() == Path(launcher.__file__).read_bytes()
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("exec", "def main(p):\n    return {}\n")
        out.writestr("lib/helper.py", "")
    assert (unpack(archive, tmp_path / "zip") / "main__.py").is_file()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("helper.py", "")
    with pytest.raises(CodeError, match=r"does not include __main__\.py"):
        unpack(archive, tmp_path / "nomain")
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CodeError, match="cannot unpack"):
        unpack(tmp_path / "bad.zip", tmp_path / "bad")


def test_the_launcher_contract_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    def fails(_params: Any) -> Any:
        raise ValueError("nope")

    assert launcher.call(fails, {}) == {"error": "nope"}
    assert "ValueError: nope" in capsys.readouterr().err
    replies = io.BytesIO()
    launcher.serve(lambda p: [p["n"], os.environ["__OW_ACTIVATION_ID"]],
                   io.StringIO('{"value": {"n": 1}, "activation_id": "a1"}\n'), replies)
    assert json.loads(replies.getvalue()) == [1, "a1"]


def test_the_log_collector_keeps_no_more_than_the_limit_of_a_line() -> None:
    collector = LogCollector()
    collector.limit = 1000
    for _ in range(100):
        collector.feed("stdout", b"a" * 10_000, 0.0)
    collector.feed("stdout", _MARKER + b"\n", 0.0)
    collector.feed("stderr", _MARKER + b"\n", 0.0)
    assert len(collector._current["stdout"].head) == 0  # the line ended
    lines, truncated = collector.take(1, until_eof=False, wait_s=0)
    assert truncated and lines == []  # one line longer than the whole limit: dropped
    collector.feed("stdout", b"short\n" + _MARKER + b"\n", 1.0)
    collector.feed("stderr", b"err" + _MARKER + b"\n", 1.0)
    assert collector.take(2, until_eof=False, wait_s=0) == (
        [(1.0, "stdout", "short"), (1.0, "stderr", "err")], False)




def test_the_engine_takes_an_array_as_a_result_and_words_other_values_as_the_proxy() -> None:
    from owdedup.engine.activation import DEVELOPER_ERROR, SUCCESS
    from owdedup.engine.executor import classify

    # typed as a dict result: the array passes through untouched (the type admits no list)
    assert cast(Any, classify([1, {"a": 2}], False)) == ([1, {"a": 2}], SUCCESS)
    assert classify("x", False) == (
        {"error": "The action did not return a dictionary or array."}, DEVELOPER_ERROR)
