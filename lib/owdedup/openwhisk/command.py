"""The ``--platform openwhisk`` side of ``owdedup map``: credentials, window, progress, report."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from owdedup.mapper import FAILED, MapRequest, MapSummary, ObjectResult
from owdedup.openwhisk.client import Credentials, OpenWhiskClient, PlatformUnreachable
from owdedup.openwhisk.fanout import FanOut, FanOutPolicy
from owdedup.openwhisk.mapping import PlatformReport, run_platform_map
from owdedup.openwhisk.wrapped_map import WrappedTarget, run_wrapped_map
from owdedup.runtime.context import Context
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


#: Runs a map through a fan-out: (fanout, stop, on_hashed, on_result) -> summary, report.
Runner = Callable[[FanOut, threading.Event, Callable[[str], None] | None,
                   Callable[[ObjectResult], None] | None], tuple[MapSummary, PlatformReport]]


def run_on_openwhisk(request: MapRequest, keys: list[str], *, window: int | None, quiet: bool,
                     console: Console) -> MapSummary:
    credentials = Credentials.resolve(request.env)
    client = OpenWhiskClient(credentials)
    try:
        return _fan_out(client, window, quiet, console, request.function, len(keys),
                        lambda fanout, stop, on_hashed, on_result: run_platform_map(
                            request, keys, fanout, stop=stop, on_hashed=on_hashed,
                            on_result=on_result))
    finally:
        client.close()


def run_wrapped_on_openwhisk(conductor: str, source: str, dest: str | None,
                             params: Mapping[str, Any], *, window: int | None, quiet: bool,
                             console: Console) -> MapSummary:
    """Every object under SOURCE (``BUCKET[/PREFIX]`` in the store the conductor is bound
    to) through the wrapped action behind *conductor*, invoked only for what its records do
    not hold (:mod:`owdedup.openwhisk.wrapped_map`)."""
    credentials = Credentials.resolve()
    client = OpenWhiskClient(credentials)
    try:
        target = WrappedTarget.read(client, conductor)
        target.check_params(params)
        bucket, _, prefix = source.partition("/")
        if not bucket or source.startswith((".", "/", "~")):
            raise ConfigError(f"SOURCE must be BUCKET[/PREFIX] in the store {conductor} is "
                              f"bound to, not {source!r}")
        context = Context(target.config.settings)
        unreadable: dict[str, str] = {}
        try:
            keys = [info.key for info in context.store.list(
                bucket, prefix, on_unreadable=unreadable.__setitem__)]
        finally:
            context.close()
        summary = _fan_out(client, window, quiet, console, conductor, len(keys),
                           lambda fanout, stop, on_hashed, on_result: run_wrapped_map(
                               target, bucket, dest, params, keys, fanout, stop=stop,
                               on_hashed=on_hashed, on_result=on_result))
    finally:
        client.close()
    summary.results = sorted(
        [*summary.results,
         *(ObjectResult(k, FAILED, error=f"{k}: {why}") for k, why in unreadable.items())],
        key=lambda entry: entry.key)
    return summary


def _fan_out(client: OpenWhiskClient, window: int | None, quiet: bool, console: Console,
             label: str, total: int, runner: Runner) -> MapSummary:
    size = window or namespace_window(client)
    fanout = FanOut(client, FanOutPolicy(window=size))
    stop = threading.Event()
    with _stop_on_interrupt(stop, console):
        if quiet:
            summary, report = runner(fanout, stop, None, None)
        else:
            summary, report = _with_progress(label, total, fanout, stop, console, runner)
    print_platform_report(report, console)
    return summary


def _with_progress(label: str, total: int, fanout: FanOut, stop: threading.Event,
                   console: Console, runner: Runner) -> tuple[MapSummary, PlatformReport]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[live]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        hashing = progress.add_task("hashing", total=total, live="")
        processing = progress.add_task(f"{label} on OpenWhisk", total=total, live="")
        started = time.monotonic()
        done = 0

        def on_result(_entry: ObjectResult) -> None:
            nonlocal done
            done += 1
            rate = done / max(1e-6, time.monotonic() - started)
            live = (f"{rate:.1f} obj/s, {fanout.in_flight} in flight, "
                    f"{fanout.stats.throttled} 429s")
            progress.update(processing, advance=1, live=live)

        return runner(fanout, stop, lambda _key: progress.advance(hashing), on_result)


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
