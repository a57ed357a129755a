"""``python -m owdedup``: the same as the ``owdedup`` command."""

from owdedup.cli import app

app(prog_name="owdedup")
