"""The action launcher of ``owdedup serve``: one process per warm action container.

Run by the base interpreter with ``-I -S`` (no site-packages but what the action ships),
as the Python runtime's own launcher does: the code folder is the working directory and the
head of ``sys.path``; ``virtualenv/bin/activate_this.py`` is exec'd when the folder has a
``virtualenv``; ``main__`` (the action's ``__main__.py``) is imported and its entry point
called once per request.

Protocol (JSON lines): requests on stdin, ``{"value": params, "<key>": ...}``, every key but
``value`` becoming an ``__OW_<KEY>`` environment variable; replies on the original stdout,
first ``{"ok": true}`` (or ``{"init_error": ...}``) once the code is loaded, then one
``{"result": ..., "crashed": bool}`` per request. The action's own stdout goes to the log
pipe given as argv[4], its stderr to stderr; after each request both get an end marker line.

Standard library only, Python 3.9 syntax: this file runs in every Python kind's interpreter.
"""

from __future__ import annotations

import importlib
import json
import os
import site
import sys
import traceback
from pathlib import Path

END_MARKER = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"


def _activate(code_dir: str, runtime_site: str) -> None:
    sys.path.insert(0, code_dir)
    if runtime_site:
        site.addsitedir(runtime_site)
    venv = Path(code_dir) / "virtualenv"
    if venv.is_dir():
        activate_this = venv / "bin" / "activate_this.py"
        if not activate_this.exists():
            raise RuntimeError("Invalid virtualenv. Zip file does not include "
                               "/virtualenv/bin/activate_this.py")
        code = compile(activate_this.read_text(), str(activate_this), "exec")
        exec(code, {"__file__": str(activate_this)})


def _markers() -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.write(END_MARKER + "\n")
        stream.flush()


def main() -> None:
    code_dir, entry, runtime_site, log_fd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(int(log_fd), 1)  # the action's stdout now feeds the stdout log pipe
    os.close(int(log_fd))
    try:
        _activate(code_dir, runtime_site)
        module = importlib.import_module("main__")
        function = getattr(module, entry, None)
        if not callable(function):
            raise RuntimeError(f"the action has no function {entry!r}")
    except BaseException as exc:  # noqa: BLE001 - any failure to load is an init error
        traceback.print_exc(file=sys.stderr)
        _markers()
        replies.write(json.dumps({"init_error": str(exc) or type(exc).__name__}) + "\n")
        replies.flush()
        sys.exit(1)
    replies.write(json.dumps({"ok": True}) + "\n")
    replies.flush()
    previous: set[str] = set()
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        request = json.loads(line)
        payload = request.get("value") or {}
        current = {f"__OW_{key.upper()}": str(value) for key, value in request.items()
                   if key != "value"}
        for stale in previous - set(current):
            os.environ.pop(stale, None)
        os.environ.update(current)
        previous = set(current)
        try:
            result = function(payload)
        except Exception as exc:  # noqa: BLE001 - the runtime's contract: an error result
            traceback.print_exc(file=sys.stderr)
            # Answered like any error result: an application error, as the real runtime does.
            result = {"error": str(exc) or type(exc).__name__}
        try:
            reply = json.dumps({"result": result, "crashed": False}, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            reply = json.dumps({"result": {"error": f"The action did not return a JSON "
                                                    f"serializable result: {exc}"},
                                "crashed": True})
        _markers()
        replies.write(reply + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
