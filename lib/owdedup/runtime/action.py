"""The one place where an action's parameters become a job and an error becomes a result.

Every file in ``actions/`` is ``main = make_main(<step>)``: parameters are checked, one step
of ``pipeline`` runs, the result is shaped. Expected failures (bad input, a missing object, a
bad parameter) come back as ``{"error": ...}`` naming the object, which ends an OpenWhisk
sequence with an application error. Anything else is a bug and is left to raise: the runtime
turns it into ``{"error": ...}`` with the traceback in the activation's logs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from owdedup.runtime.config import ENV_OUT_BUCKET, Settings
from owdedup.runtime.context import Context, ContextCache
from owdedup.runtime.errors import OwdedupError
from owdedup.runtime.errors import error_result as error_result  # its old home
from owdedup.runtime.job import Job

Step = Callable[[Job, Context], Job]
Main = Callable[[dict[str, Any]], dict[str, Any]]

# One per process: a warm OpenWhisk container reuses its connections across activations.
_CONTEXTS = ContextCache()


def close_contexts() -> None:
    """Close this process's contexts, writing their buffered counts: for a process that ends
    without running exit hooks (a forked worker ends with ``os._exit``)."""
    _CONTEXTS.close()


def make_main(step: Step) -> Main:
    def main(params: dict[str, Any]) -> dict[str, Any]:
        return run_step(step, params)

    main.__doc__ = step.__doc__
    return main


def run_step(
    step: Step, params: dict[str, Any], contexts: ContextCache = _CONTEXTS
) -> dict[str, Any]:
    try:
        job = Job.from_params(params, default_dest=os.environ.get(ENV_OUT_BUCKET, ""))
        context = contexts.get(Settings.resolve(params))
        return step(job, context).to_result()
    except OwdedupError as exc:
        return error_result(exc, params)
