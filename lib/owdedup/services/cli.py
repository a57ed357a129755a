"""``owdedup services``: install and run MinIO, Kafka and a CouchDB-API server locally.

    owdedup services up            # install what is missing, start all, set up buckets
    eval "$(owdedup services env)" # point owdedup at them
    owdedup services status | logs kafka -n 100 | down
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from owdedup.runtime.errors import OwdedupError
from owdedup.services import processes
from owdedup.services.config import ServicesConfig
from owdedup.services.processes import logs as service_logs
from owdedup.services.registry import SERVICES
from owdedup.services.registry import install as install_services
from owdedup.terminal import console, fail

app = typer.Typer(
    help="Run MinIO, Kafka and a CouchDB-API server as local processes on 127.0.0.1.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OnlyOpt = Annotated[
    list[str] | None,
    typer.Option("--only", help=f"Only this service (repeatable): {', '.join(SERVICES)}"),
]


@contextmanager
def _failing_cleanly() -> Iterator[None]:
    """Turn an expected failure (a bad OWDEDUP_* setting, a service that will not start) into
    a one-line error and exit code 1."""
    try:
        yield
    except OwdedupError as error:
        raise fail(error) from None


@app.command("install")
def install_cmd(only: OnlyOpt = None) -> None:
    """Install the pinned services into the cache (skips what is already there)."""
    with _failing_cleanly():
        install_services(ServicesConfig.from_env(), only)


@app.command("install-tools")
def install_tools_cmd() -> None:
    """Build the pinned OpenWhisk tools into the cache's bin/: wskdeploy and the wsk CLI
    (needs Go; skips what is already there)."""
    from owdedup.services.install import install_wskdeploy
    from owdedup.services.wsk import install_wsk, wsk_path

    with _failing_cleanly():
        config = ServicesConfig.from_env()
        install_wskdeploy(config)
        install_wsk(config)
    console.print(f"wsk: {wsk_path(config)}")


@app.command()
def up(only: OnlyOpt = None) -> None:
    """Install what is missing, start the services and create the buckets."""
    with _failing_cleanly():
        processes.up(ServicesConfig.from_env(), only)
    console.print('Services are up. Use them with: eval "$(owdedup services env)"')


@app.command()
def down(only: OnlyOpt = None) -> None:
    """Stop the services (their data stays in the cache)."""
    with _failing_cleanly():
        processes.down(ServicesConfig.from_env(), only)


@app.command()
def status() -> None:
    """Show which services run, their pid, endpoint and health."""
    with _failing_cleanly():
        statuses = processes.status_all(ServicesConfig.from_env())
    table = Table("service", "state", "pid", "endpoint", "version")
    for item in statuses:
        colour = "green" if item.ready else ("yellow" if item.running else "dim")
        table.add_row(
            item.name,
            f"[{colour}]{item.state}[/{colour}]",
            str(item.pid or "-"),
            item.endpoint,
            item.version,
        )
    Console().print(table)
    if not all(item.ready for item in statuses):
        raise typer.Exit(3)


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help=f"Service: {', '.join(SERVICES)}")],
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many lines")] = 50,
) -> None:
    """Print the end of a service's log file."""
    with _failing_cleanly():
        config = ServicesConfig.from_env()
        text = service_logs(config, name, lines)
    if text:
        print(text)
    else:
        console.print(f"no log yet at {config.log_file(name)}")


@app.command()
def env() -> None:
    """Print `export` lines for the running services (eval them in your shell)."""
    with _failing_cleanly():
        lines = processes.env_exports(ServicesConfig.from_env())
    print("\n".join(lines))
