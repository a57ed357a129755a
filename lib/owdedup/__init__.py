"""owdedup: deduplicate cloud-function executions by the content of their input.

This package ships inside every OpenWhisk action zip, so importing it must stay cheap:
nothing here imports Pillow, network clients or the CLI. Heavy modules are imported only by
the code paths that need them (Pillow only on a cache miss in the thumbnail step).
"""

__version__ = "0.1.0"
