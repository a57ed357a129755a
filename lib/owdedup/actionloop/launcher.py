"""The python:3.11 runtime's launcher, as the image runs it: the one copy in this project.

The image's ``compile`` step copies the runtime's ``lib/launcher.py`` into the action folder
as ``exec__.py`` and the actionloop proxy starts ``python exec__.py`` there (see
:mod:`owdedup.actionloop.code`); this file is that launcher, doing what
apache/openwhisk-runtime-python ``core/python3ActionLoop/lib/launcher.py`` does:

- activate ``virtualenv/`` with ``virtualenv/bin/activate_this.py`` (a ``virtualenv`` folder
  without it: "Invalid virtualenv..." on stderr, exit 1);
- ``from main__ import <entry> as main`` (an import error or a missing entry ends the process
  with the traceback on stderr: the proxy then reports that the action cannot start);
- with ``__OW_WAIT_FOR_ACK`` set, ``{"ok": true}`` on the reply channel once loaded;
- per request line on stdin ``{"value": params, "<key>": ...}``: every key but ``value``
  becomes the environment variable ``__OW_<KEY>``, ``main(value)`` runs, an exception becomes
  ``{"error": str(exc)}`` with its traceback on stderr, and the result goes out as one JSON
  line on the reply channel (a result that is not JSON-serialisable ends the process, as
  there). The end-of-activation markers are the proxy's business, not the launcher's.

What differs, and why: the image's interpreter has its site-packages; here the base
interpreter runs with ``-S`` and the runtime's preinstalled packages come as ``--site DIR``
folders (:mod:`owdedup.actionloop.site`); the reply channel is ``--reply-fd N`` instead of a
fixed descriptor 3; ``--subreaper`` makes the process the reaper of its orphaned
descendants, so that killing the activation can find every process it started (the
container's cgroup does that on OpenWhisk). Python's locale coercion adds ``LC_CTYPE`` to an
environment without a locale; the image sets ``LANG`` instead, so it is taken out again.

Tools that measure or probe an action (the zip tests, the benchmarks) load this file as a
module and call :func:`prepare`, :func:`load_main` and :func:`call` themselves, so that they
run an action exactly as it is run here.

Standard library only, Python 3.9 syntax: this file runs in every Python kind's interpreter.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

TYPE_CHECKING = False  # typing is not imported at run time: it costs every cold start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO, Any

    Main = Callable[[Any], Any]

#: What the runtime's ``compile`` names the launcher and the action's ``__main__.py``.
LAUNCHER_NAME = "exec__.py"
MAIN_MODULE = "main__"
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process instead of init (Linux)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: descendants are found while they live
        pass


def add_sites(folders: list[str]) -> None:
    """The runtime image's site-packages stand-ins, after the action's own folder."""
    if folders:
        import site

        for folder in folders:
            site.addsitedir(folder)


def activate_virtualenv(folder: str) -> None:
    """As the launcher does: exec ``virtualenv/bin/activate_this.py`` when there is a
    ``virtualenv`` folder; exit 1 when it lacks that file."""
    path_to_virtualenv = os.path.abspath(os.path.join(folder, "virtualenv"))
    if not os.path.isdir(path_to_virtualenv):
        return
    activate_this_file = path_to_virtualenv + "/bin/activate_this.py"
    if not os.path.exists(activate_this_file):
        sys.stderr.write("Invalid virtualenv. Zip file does not include /virtualenv/bin/"
                         + os.path.basename(activate_this_file) + "\n")
        sys.exit(1)
    with open(activate_this_file) as f:
        code = compile(f.read(), activate_this_file, "exec")
    exec(code, {"__file__": activate_this_file})


def prepare(folder: str, sites: list[str] | None = None) -> None:
    """Everything before the action's import: ``sys.path`` as ``python exec__.py`` in
    *folder* has it, the runtime's packages, the action's virtualenv."""
    if sys.path[:1] != [folder]:
        sys.path.insert(0, folder)  # `python exec__.py`: the script's folder comes first
    if os.environ.get("LC_CTYPE") == "C.UTF-8" and "LANG" not in os.environ \
            and "LC_ALL" not in os.environ:
        del os.environ["LC_CTYPE"]  # added by PEP 538 coercion, never by the proxy
    add_sites(sites or [])
    try:
        activate_virtualenv(folder)
    except Exception:  # noqa: BLE001 - as the launcher: a short traceback, exit 1
        traceback.print_exc(file=sys.stderr, limit=0)
        sys.exit(1)


def load_main(entry: str = "main") -> Main:
    """``from main__ import <entry> as main``, with that statement's ImportError."""
    module = importlib.import_module(MAIN_MODULE)
    function = getattr(module, entry, None)
    if function is None:
        raise ImportError(f"cannot import name {entry!r} from {MAIN_MODULE!r} "
                          f"({getattr(module, '__file__', '?')})", name=MAIN_MODULE)
    return function  # type: ignore[no-any-return]


def set_environment(request: dict[str, Any]) -> Any:
    """Every key of a request but ``value`` as ``__OW_<KEY>``; returns the ``value``."""
    payload: Any = {}
    for key, value in request.items():
        if key == "value":
            payload = value
        else:
            os.environ[f"__OW_{key.upper()}"] = value if isinstance(value, str) \
                else json.dumps(value)
    return payload


def call(main: Main, payload: Any) -> Any:
    """``main(payload)``; an exception is ``{"error": str(exc)}``, traceback on stderr."""
    try:
        return main(payload)
    except Exception as ex:  # noqa: BLE001 - the runtime's contract
        print(traceback.format_exc(), file=sys.stderr)
        return {"error": str(ex)}


def serve(main: Main, requests: IO[str], replies: IO[bytes]) -> None:
    """The activation loop: one request line in, one result line out, until stdin ends."""
    while True:
        line = requests.readline()
        if not line:
            break
        result = call(main, set_environment(json.loads(line)))
        replies.write(json.dumps(result, ensure_ascii=False).encode("utf-8"))
        replies.write(b"\n")
        sys.stdout.flush()
        sys.stderr.flush()
        replies.flush()


def run(argv: list[str]) -> None:
    """``exec__.py ENTRY [--reply-fd N] [--subreaper] [--site DIR]...``"""
    entry, reply_fd, subreaper = "main", 3, False
    sites: list[str] = []
    args = list(argv)
    if args and not args[0].startswith("--"):
        entry = args.pop(0)
    while args:
        flag = args.pop(0)
        if flag == "--reply-fd":
            reply_fd = int(args.pop(0))
        elif flag == "--site":
            sites.append(args.pop(0))
        elif flag == "--subreaper":
            subreaper = True
        else:
            sys.exit(f"launcher: unknown argument {flag!r}")
    if subreaper:
        become_subreaper()
    prepare(os.path.dirname(os.path.abspath(__file__)), sites)
    main = load_main(entry)  # an exception ends the process: "cannot start"
    replies = os.fdopen(reply_fd, "wb")
    if os.getenv("__OW_WAIT_FOR_ACK", "") != "":
        replies.write(json.dumps({"ok": True}, ensure_ascii=False).encode("utf-8") + b"\n")
        replies.flush()
    serve(main, sys.stdin, replies)


if __name__ == "__main__":
    run(sys.argv[1:])
