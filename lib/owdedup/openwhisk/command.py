"""The ``--platform openwhisk`` side of ``owdedup map``: credentials, window, progress, report."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from owdedup.mapper import MapRequest, MapSummary, ObjectResult
from owdedup.openwhisk.client import Credentials, OpenWhiskClient, PlatformUnreachable
from owdedup.openwhisk.fanout import FanOut, FanOutPolicy
from owdedup.openwhisk.mapping import PlatformReport, run_platform_map
from owdedup.runtime.errors import ConfigError

#: OpenWhisk's default ``concurrentInvocations`` per namespace, when the limits are not said.
DEFAULT_WINDOW = 100


def namespace_window(client: OpenWhiskClient) -> int:
    """The namespace's concurrent-invocation limit (``GET .../limits``), else the default."""
    try:
        reply = client.limits()
    except PlatformUnreachable as exc:
        raise ConfigError(f"OpenWhisk does not answer: {exc}") from None
    if reply.status in (401, 403):
        raise ConfigError(f"OpenWhisk refused the key (HTTP {reply.status})")
    if reply.status == 200 and isinstance(reply.body, dict):
        value = reply.body.get("concurrentInvocations")
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_WINDOW


@contextmanager
def _stop_on_interrupt(stop: threading.Event, console: Console) -> Iterator[None]:
    """Ctrl-C stops issuing; what is in flight finishes and the results so far are kept."""

    def interrupted(_signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            console.print("stopping: waiting for the invocations in flight (Ctrl-C again "
                          "to abandon them)", highlight=False)
            stop.set()
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_on_openwhisk(request: MapRequest, keys: list[str], *, window: int | None, quiet: bool,
                     console: Console) -> MapSummary:
    credentials = Credentials.resolve(request.env)
    client = OpenWhiskClient(credentials)
    try:
        size = window or namespace_window(client)
        fanout = FanOut(client, FanOutPolicy(window=size))
        stop = threading.Event()
        with _stop_on_interrupt(stop, console):
            if quiet:
                summary, report = run_platform_map(request, keys, fanout, stop=stop)
            else:
                summary, report = _with_progress(request, keys, fanout, stop, console)
    finally:
        client.close()
    print_platform_report(report, console)
    return summary


def _with_progress(request: MapRequest, keys: list[str], fanout: FanOut, stop: threading.Event,
                   console: Console) -> tuple[MapSummary, PlatformReport]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[live]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        hashing = progress.add_task("hashing", total=len(keys), live="")
        processing = progress.add_task(f"{request.function} on OpenWhisk", total=len(keys),
                                       live="")
        started = time.monotonic()
        done = 0

        def on_result(_entry: ObjectResult) -> None:
            nonlocal done
            done += 1
            rate = done / max(1e-6, time.monotonic() - started)
            live = (f"{rate:.1f} obj/s, {fanout.in_flight} in flight, "
                    f"{fanout.stats.throttled} 429s")
            progress.update(processing, advance=1, live=live)

        return run_platform_map(request, keys, fanout, stop=stop,
                                on_hashed=lambda _key: progress.advance(hashing),
                                on_result=on_result)


def print_platform_report(report: PlatformReport, console: Console) -> None:
    stats = report.fanout
    table = Table(title="OpenWhisk", show_header=False)
    table.add_row("invocations made", str(stats.invocations))
    table.add_row("invocations saved", str(report.saved_invocations))
    table.add_row("429s met (absorbed)", str(stats.throttled))
    table.add_row("retries", str(stats.retries))
    table.add_row("backup invocations", str(stats.backups))
    table.add_row("lost activations (retried)", str(stats.lost))
    table.add_row("cold starts", str(stats.cold_starts))
    table.add_row("platform compute time", f"{stats.platform_ms / 1000:.2f} s")
    table.add_row("window (min-max)", f"{stats.window_min}-{stats.window_max}")
    console.print(table)
