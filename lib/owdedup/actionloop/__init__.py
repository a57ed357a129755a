"""How actions are run outside OpenWhisk, as the runtime images run them: the one launcher.

- :mod:`~owdedup.actionloop.launcher`: the python:3.11 launcher (``exec__.py``), run by the
  base interpreter in the action's folder; tools that measure actions load it as a module.
- :mod:`~owdedup.actionloop.code`: an action's code unpacked as the runtime's ``compile``
  leaves it (the one unpacker), and a cache of unpacked code for ``owdedup serve``.
- :mod:`~owdedup.actionloop.proxy`: one action process behind the actionloop proxy: its
  environment, replies, log markers and limits, and the kill of its whole process tree.
- :mod:`~owdedup.actionloop.site`: the runtime image's preinstalled packages, prepared once.
- :mod:`~owdedup.actionloop.node`: ``nodejs:20`` actions on the machine's Node.js.

Users: ``owdedup serve`` (:mod:`owdedup.serve.process_runner`), the in-process runner
(:mod:`owdedup.engine.runner`: the result contract, a user's zip unpacked), the zip tests and
the benchmarks.
Tooling, never shipped in an action zip.
"""
