"""``owdedup invoke ./myfunction.py`` and ``owdedup map ./myfunction.py``: a Python file's
main(params) run locally with the wrapper's semantics (issue 10)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from owdedup.cli import app

CODE = '''
from pathlib import Path

def main(params):
    runs = Path(__file__).with_name("runs.txt")
    with runs.open("a") as out:
        out.write(params["key"] + "\\n")
    if params["key"].endswith(".bad"):
        raise ValueError("cannot read " + params["key"])
    data = Path(params["root"], params["bucket"], params["key"]).read_bytes()
    return {"length": len(data), "dest": params["dest_bucket"]}
'''


def setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "store"
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    for name, data in (("a.jpg", b"same"), ("b.jpg", b"same"), ("c.jpg", b"other"),
                       ("x.bad", b"broken")):
        (root / "in" / name).write_bytes(data)
    code = tmp_path / "myfunction.py"
    code.write_text(CODE)
    env = {"OWDEDUP_STORE": f"file://{root}",
           "OWDEDUP_RECORDS": f"sqlite://{tmp_path / 'records.sqlite'}"}
    return code, env


def runs(tmp_path: Path) -> list[str]:
    return (tmp_path / "runs.txt").read_text().split()


def test_invoke_a_python_file_then_the_same_bytes_are_a_hit(tmp_path: Path) -> None:
    code, env = setup(tmp_path)
    root = str(tmp_path / "store")
    cli = CliRunner()
    first = cli.invoke(app, ["invoke", str(code), "in/a.jpg", "out", "-p", f"root={root}"],
                       env=env)
    assert first.exit_code == 0, first.output
    result = json.loads(first.output)
    assert result["length"] == 4 and result["owdedup"]["hit"] is False
    again = cli.invoke(app, ["invoke", str(code), "in/b.jpg", "out", "-p", f"root={root}"],
                       env=env)
    assert json.loads(again.output)["owdedup"]["hit"] is True
    assert runs(tmp_path) == ["a.jpg"]
    code.write_text(CODE + "# edited\n")  # a new version of the file: a miss
    edited = cli.invoke(app, ["invoke", str(code), "in/b.jpg", "out", "-p", f"root={root}"],
                        env=env)
    assert json.loads(edited.output)["owdedup"]["hit"] is False
    assert runs(tmp_path) == ["a.jpg", "b.jpg"]


def test_map_a_python_file_over_a_bucket(tmp_path: Path) -> None:
    code, env = setup(tmp_path)
    out = tmp_path / "results.jsonl"
    done = CliRunner().invoke(app, ["map", str(code), "in", "out", "-p",
                                    f"root={tmp_path / 'store'}", "--results", str(out)],
                              env=env)
    assert done.exit_code == 1  # x.bad failed; the others went on
    assert "2 computed, 1 deduplicated, 1 failed" in \
        done.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["key"], e["status"]) for e in lines] == [
        ("a.jpg", "computed"), ("b.jpg", "deduplicated"), ("c.jpg", "computed"),
        ("x.bad", "failed")]
    assert "ValueError: cannot read x.bad" in lines[3]["result"]["error"]
    assert sorted(runs(tmp_path)) == ["a.jpg", "c.jpg", "x.bad"]


def test_a_missing_object_or_file_is_named(tmp_path: Path) -> None:
    code, env = setup(tmp_path)
    gone = CliRunner().invoke(app, ["invoke", str(code), "in/gone.jpg", "out"], env=env)
    assert gone.exit_code == 1 and "in/gone.jpg" in gone.output
    assert "myfunction" in gone.output
    nofile = CliRunner().invoke(app, ["invoke", str(tmp_path / "no.py"), "in/a.jpg", "out"],
                                env=env)
    assert nofile.exit_code == 1 and "no such Python file" in nofile.output
