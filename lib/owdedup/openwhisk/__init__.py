"""Talking to an OpenWhisk deployment from the tooling: the REST client and the fan-out.

Tooling, never shipped in an action (the runtime's own calls to the platform are
``owdedup.runtime.platform``).
"""
