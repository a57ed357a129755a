"""``nodejs:20`` actions on the machine's Node.js, so that a user's Node.js action runs under
``owdedup serve`` as well (and can be wrapped and deduplicated locally).

The launcher (``launcher.js`` beside this module) loads the code as the Node.js runtime does
(source evaluated, so a top-level ``function main`` needs no export; a zip ``require``d as a
module folder) and speaks the Python launcher's line protocol, so the same proxy
(:mod:`owdedup.actionloop.proxy`) runs both. ``main(params)`` may return a Promise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

KIND = "nodejs:20"
EXECUTION_ENV = "openwhisk/action-nodejs-v20"
LAUNCHER = Path(__file__).with_name("launcher.js")


def command() -> list[str] | None:
    """``node`` and the launcher; None when the machine has no ``node``."""
    node = shutil.which("node")
    return None if node is None else [node, str(LAUNCHER)]


def arguments(code_dir: Path, entry: str) -> list[str]:
    return [str(code_dir), entry]
