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


def test_the_launcher_contract_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The launcher sets the __OW_* variables of each activation in this process, as the
    # runtime does in its own: restore them afterwards, for the tests that read them.
    for name in ("__OW_ACTIVATION_ID", "__OW_DEADLINE", "__OW_ACTION_NAME", "__OW_NAMESPACE",
                 "__OW_API_HOST", "__OW_API_KEY", "__OW_TRANSACTION_ID"):
        monkeypatch.setenv(name, "")
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


def test_kill_tree_never_kills_a_pid_it_could_not_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    # A descendant found in /proc that is gone (reaped) before it is stopped left a pid that
    # another process may have by the time the tree is killed: it must not be signalled again.
    import signal

    from owdedup.actionloop import proxy

    gone, stoppable, root = 40001, 40002, 40000
    signals: list[tuple[int, int]] = []

    def fake_kill(pid: int, sig: int) -> None:
        if pid == gone and not any(p == gone for p, _ in reused):
            reused.append((pid, sig))  # gone now; from here on the pid is someone else's
            raise ProcessLookupError(pid)
        signals.append((pid, sig))

    reused: list[tuple[int, int]] = []

    monkeypatch.setattr(proxy, "descendants", lambda _root: {gone, stoppable})
    monkeypatch.setattr(os, "kill", fake_kill)
    monkeypatch.setattr(os, "killpg", lambda pid, sig: signals.append((-pid, sig)))
    proxy.kill_tree(root)
    assert (stoppable, signal.SIGKILL) in signals
    assert all(pid != gone for pid, _ in signals)


def test_a_dead_action_process_still_takes_its_children_with_it(tmp_path: Path) -> None:
    # The launcher exited with a child still running, and ``alive`` was asked first (as the
    # warm pool does): the kill must still reach the child, as a container's removal does.
    import subprocess
    import sys
    import time

    from owdedup.actionloop.proxy import ActionProcess, init_env

    (tmp_path / launcher.LAUNCHER_NAME).write_text(Path(launcher.__file__).read_text())
    (tmp_path / f"{launcher.MAIN_MODULE}.py").write_text(
        "import os, subprocess, sys\n"
        "def main(p):\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "    print('child', child.pid, flush=True)\n"
        "    os._exit(3)\n")
    process = ActionProcess([sys.executable, "-S", "-u", launcher.LAUNCHER_NAME, "main",
                             "--subreaper"], tmp_path, init_env({"value": {}}))
    try:
        assert process.reply(time.monotonic() + 30).body == b'{"ok": true}'
        assert process.send({"value": {}}, 1 << 20)
        assert process.reply(time.monotonic() + 30).exited
        deadline = time.monotonic() + 10
        while process.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not process.alive
    finally:
        process.kill()
    lines, _ = process.take_logs(until_eof=True)
    [child] = [int(text.split()[-1]) for _, _, text in lines if text.startswith("child ")]
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(child):
        subprocess.run(["kill", "-9", str(child)], check=False)
        pytest.fail(f"the action's child {child} outlived it")


def _running(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
