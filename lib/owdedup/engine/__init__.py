"""A local model of OpenWhisk: the manifest, parameter merging, sequences and activations.

The core here does no network I/O. ``LocalExecutor`` runs actions in-process for the CLI and
the tests; the REST front end reuses the same model and semantics.
"""
