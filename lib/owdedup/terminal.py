"""Messages for the person at the terminal, on stderr, shared by every ``owdedup`` command
(a small module of its own, so that a command loads it without loading the others)."""

from __future__ import annotations

import typer
from rich.console import Console

#: stderr: stdout is kept for results (JSON, tables, ``services env``).
console = Console(stderr=True)


def fail(message: object, code: int = 1) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the Exit to raise (no traceback)."""
    console.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)
