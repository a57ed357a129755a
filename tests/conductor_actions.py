"""Python actions for the conductor tests, shared by the in-process and the REST front ends.

``triple``, ``increment`` and ``tripleAndIncrement`` are the example of OpenWhisk's
``docs/conductors.md`` written in Python. ``scripted`` is a conductor for the failure modes:
its input's ``$script`` is the list of continuations it returns, one per activation (carried
over in its state), and it ends with ``{"params": {"seen": [...]}}``, every input it was
given (without its own bookkeeping), so a test reads what came back from each component.
"""

from __future__ import annotations

TRIPLE = "def main(params):\n    return {'value': params['value'] * 3}\n"

INCREMENT = "def main(params):\n    return {'value': params['value'] + 1}\n"

#: ``PREFIX`` stands for where triple and increment are: "" (the default package) or "p/".
TRIPLE_AND_INCREMENT = """
def main(params):
    step = params.pop('$step', 0)
    if step == 0:
        return {'action': 'PREFIXtriple', 'params': params, 'state': {'$step': 1}}
    if step == 1:
        return {'action': 'PREFIXincrement', 'params': params, 'state': {'$step': 2}}
    return {'params': params}
"""

SCRIPTED = """
def main(params):
    script = params.pop('$script', [])
    seen = params.pop('$seen', []) + [params]
    if not script:
        return {'params': {'seen': seen}}
    step = dict(script[0])
    if 'action' in step:  # carry the rest of the script, unless the step says its own state
        step.setdefault('state', {'$script': script[1:], '$seen': seen})
    return step
"""

ECHO = "def main(params):\n    return dict(params)\n"

FAIL = "def main(params):\n    return {'error': 'bad thing', 'key': 'k'}\n"

CRASH = "def main(params):\n    raise RuntimeError('boom')\n"

SLOW = "import time\n\ndef main(params):\n    time.sleep(5)\n    return {'late': True}\n"


def triple_and_increment(prefix: str) -> str:
    return TRIPLE_AND_INCREMENT.replace("PREFIX", prefix)
