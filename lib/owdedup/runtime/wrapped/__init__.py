"""Deduplicating functions we did not write: a wrapped OpenWhisk action (the conductor,
``actions/dedup.py``), a decorated Python ``main``, a local Python file.

Modules: ``keying`` (what a call is keyed by), ``identity`` (a function's version
fingerprint), ``results`` (look up, record, metadata), ``config`` (the wrapper's own
``owdedup_*`` parameters), ``conductor`` (the two activations), ``decorator`` (``@dedup``).
Nothing here is imported by the thumbnail's actions; importing this package imports none of
its modules.
"""
