"""The part of owdedup that runs inside every OpenWhisk action.

Action zips carry code of this subpackage only (an allowlist), each the modules its action
can import (see ``owdedup.deploy.needs``).
It must stay small and cheap to import: nothing here imports Pillow, network clients or any
tooling module (``owdedup.cli``, ``deploy``, ``engine``, ``serve``, ``services``, ``mapper``,
``watch``, ``workers``, ``workpool``, ``locations``); the tooling beside it imports the
runtime, never the reverse, and ``tests/unit/test_layout.py`` enforces that direction.
"""
