"""The README's flow with the real ``wsk`` CLI against ``owdedup serve``: ``wsk action
create``, ``owdedup wrap``, ``wsk action invoke ... -r`` (issue 10)."""

from __future__ import annotations

import shlex
from pathlib import Path

from owdedup.serve.server import usage_lines
from tests.serve.conftest import AUTH, ServerFactory
from tests.serve.test_wrap_command import environment, wrap
from tests.serve.test_wsk_cli import Wsk
from tests.tooling import real_wsk

CODE = """
from pathlib import Path

def main(params):
    data = Path(params["root"], params["bucket"], params["key"]).read_bytes()
    return {"length": len(data), "threshold": params.get("threshold", 1)}
"""


def test_create_wrap_invoke_with_wsk(make_server: ServerFactory, runtime_site: Path,
                                     tmp_path: Path) -> None:
    server = make_server(runtime_site=runtime_site)
    wsk = Wsk(real_wsk(), tmp_path)
    banner = next(line for line in usage_lines(server.url, "guest", AUTH, generated=True)
                  if "wsk property set" in line)
    wsk.run(*shlex.split(banner.strip())[1:])
    store = tmp_path / "store"
    (store / "inbucket").mkdir(parents=True)
    (store / "inbucket" / "a.jpg").write_bytes(b"some photo")
    (store / "inbucket" / "copy.jpg").write_bytes(b"some photo")
    source = tmp_path / "myfunction.py"
    source.write_text(CODE)
    wsk.run("action", "create", "myfunction", str(source), "--kind", "python:3.11")
    env = {**environment(server, tmp_path), "OWDEDUP_STORE": f"file://{store}"}
    del env["OWDEDUP_STORE_ACCESS_KEY"], env["OWDEDUP_STORE_SECRET_KEY"]
    code, output = wrap(env, "myfunction", "--objects", "bucket/key",
                        "--ignore", "dest_bucket,root")
    assert code == 0, output

    def invoke(key: str) -> dict[str, object]:
        result = wsk.json("action", "invoke", "myfunction-dedup", "-p", "bucket", "inbucket",
                          "-p", "key", key, "-p", "dest_bucket", "outbucket",
                          "-p", "root", str(store), "-r")
        assert isinstance(result, dict)
        return result

    first = invoke("a.jpg")
    assert first["length"] == 10 and first["owdedup"]["hit"] is False  # type: ignore[index]
    assert invoke("copy.jpg")["owdedup"]["hit"] is True  # type: ignore[index]
    wsk.run("action", "update", "myfunction", "-p", "threshold", "2")
    updated = invoke("copy.jpg")
    assert updated["threshold"] == 2 and updated["owdedup"]["hit"] is False  # type: ignore[index]
    assert invoke("a.jpg")["owdedup"]["hit"] is True  # type: ignore[index]
