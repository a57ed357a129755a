"""``owdedup``: invoke, map and inspect the deduplicating functions from a terminal.

Everything runs through the sequences of ``manifest.yaml`` on the local executor, exactly as
OpenWhisk would run them. Store locations come from ``--store``/``--records`` or the
``OWDEDUP_STORE``/``OWDEDUP_RECORDS`` environment variables; with neither, a folder store
rooted at the current directory and a SQLite file in ``.owdedup/``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from owdedup import locations
from owdedup.runtime import env as env_names
from owdedup.runtime.config import ENV_RECORDS, ENV_STORE, Settings
from owdedup.runtime.context import Context
from owdedup.runtime.errors import ConfigError, OwdedupError
from owdedup.runtime.functions import DedupFunction, get_function, registry, sequence_of
from owdedup.runtime.pipeline import materialized_stem
from owdedup.terminal import console
from owdedup.terminal import fail as _fail

if TYPE_CHECKING:
    from owdedup.mapper import MapRequest, MapSummary

PACKAGE = "owdedup"


@dataclass(frozen=True)
class LazyCommand:
    """A subcommand whose module is imported only when it runs or shows its own help:
    ``owdedup --help`` and ``owdedup invoke`` load neither the server nor the services."""

    module: str
    attribute: str  # a typer.Typer (a group) or a typer command function
    help: str

    def load(self, name: str) -> Any:
        found = getattr(importlib.import_module(self.module), self.attribute)
        if isinstance(found, typer.Typer):
            return typer.main.get_command(found)
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        single.command(name)(found)
        return typer.main.get_command(single)


LAZY_COMMANDS: dict[str, LazyCommand] = {
    "deploy": LazyCommand("owdedup.deploy.command", "deploy_command",
                          "Build the action zips and deploy manifest.yaml with wskdeploy."),
    "serve": LazyCommand("owdedup.serve.server", "serve_command",
                         "Development server for the OpenWhisk REST API subset."),
    "services": LazyCommand("owdedup.services.cli", "app",
                            "Run MinIO, Kafka and a CouchDB-API server as local processes."),
    "wrap": LazyCommand("owdedup.openwhisk.wrap", "wrap_command",
                        "Deduplicate an existing OpenWhisk action: create ACTION-dedup."),
    "undeploy": LazyCommand("owdedup.deploy.command", "undeploy_command",
                            "Delete what the last deployment made (as recorded)."),
}


class LazyGroup(TyperGroup):
    """click's LazyGroup pattern: the group's help lists a lazy command by its name and
    help alone; resolving it to run it (or to show its own help) imports its module.
    (click's types are left as Any: typer ships its own copy of click in recent versions.)"""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        lazy = LAZY_COMMANDS.get(cmd_name)
        if lazy is not None:
            return TyperCommand(cmd_name, help=lazy.help, short_help=lazy.help)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if name in LAZY_COMMANDS:
            command = LAZY_COMMANDS[name].load(name)
        return name, command, rest


app = typer.Typer(
    cls=LazyGroup,
    help="Deduplicate cloud-function executions: run a function once per distinct content.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
EXIT_FAILED = 1  # an object failed (or the command could not start)
EXIT_NOT_RECORDED = 3  # every object done, but the record store did not keep some records


StoreOpt = Annotated[
    str | None, typer.Option("--store", help=f"Object-store URL [env: {env_names.STORE}]")
]
RecordsOpt = Annotated[
    str | None, typer.Option("--records", help=f"Record-store URL [env: {env_names.RECORDS}]")
]
# The thumbnail's parameters have options of their own (given to any function that takes
# them, with these defaults); every function's parameters can be given with --param.
OPTION_DEFAULTS: dict[str, Any] = {"sizes": "256", "format": "jpeg", "quality": 85}
SizeOpt = Annotated[str | None, typer.Option(
    "--size", help="Box size in px, or several: 16,32,64  [default: 256]")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", help="jpeg, png or webp  [default: jpeg]")]
QualityOpt = Annotated[int | None, typer.Option(
    "--quality", help="JPEG/WebP quality (1-100)  [default: 85]")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", "-p", help="A parameter of the function, NAME=VALUE (repeatable)")]
ManifestOpt = Annotated[Path | None, typer.Option("--manifest", help="manifest.yaml to run")]
MaterializeOpt = Annotated[
    bool, typer.Option("--materialize", help="Also copy each output under the input's name")
]


def _environment(store: str | None, records: str | None) -> dict[str, str]:
    """The environment the manifest's $VARs are bound from, with the CLI's choices applied."""
    env = dict(os.environ)
    if store:
        env[ENV_STORE] = store
    if records:
        env[ENV_RECORDS] = records
    return env


def _require_other_dest(src_bucket: str, dest: str) -> None:
    """Outputs written into the input bucket would become inputs (and, with watch, new
    events): ``invoke`` and ``map`` both refuse it."""
    if src_bucket == dest:
        raise ConfigError(
            f"DEST must be another bucket than {src_bucket!r}: outputs would become inputs"
        )


def _function_params(
    spec: DedupFunction[Any], size: str | None, fmt: str | None, quality: int | None,
    pairs: list[str] | None,
) -> dict[str, Any]:
    """The parameters of *spec* given on the command line: ``--size/--format/--quality``
    where the function takes them (with their defaults, as before), and every ``--param``.
    A parameter the function does not take is an error, not silently dropped."""
    options = {"sizes": size, "format": fmt, "quality": quality}
    params: dict[str, Any] = {}
    for name, value in options.items():
        if name in spec.parameters:
            params[name] = OPTION_DEFAULTS[name] if value is None else value
        elif value is not None:
            raise ConfigError(f"{spec.name} takes no {name}; its parameters: "
                              f"{', '.join(spec.parameters) or 'none'}")
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or name not in spec.parameters:
            raise ConfigError(f"bad --param {pair!r}: give NAME=VALUE with NAME one of "
                              f"{spec.name}'s parameters: {', '.join(spec.parameters) or 'none'}")
        params[name] = value
    return params


@app.command()
def invoke(
    function: Annotated[str, typer.Argument(
        help="Function to run, e.g. thumbnail, or a Python file: ./myfunction.py")],
    source: Annotated[str, typer.Argument(help="SRC_BUCKET/KEY, or a file path")],
    dest: Annotated[str, typer.Argument(help="DEST_BUCKET, or a folder path")],
    size: SizeOpt = None,
    fmt: FormatOpt = None,
    quality: QualityOpt = None,
    param: ParamOpt = None,
    materialize: MaterializeOpt = False,
    store: StoreOpt = None,
    records: RecordsOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Run the deduplicating sequence on one object and print its result as JSON.

    FUNCTION may also be a Python file (./myfunction.py): its main(params) runs with the
    wrapper's semantics (issue 10), on {"bucket", "key", "dest_bucket"} and every --param."""
    if _is_python_file(function):
        _refuse_thumbnail_options(size, fmt, quality, materialize, manifest)
        _invoke_file(Path(function), source, dest, param, store, records)
        return
    from owdedup.engine.local import local_executor
    from owdedup.runtime import handover
    from owdedup.workers import HANDOVER_BYTES

    handover.enable(HANDOVER_BYTES)  # the sequence runs in this process: one read of the input
    try:
        spec = get_function(function)
        where = locations.resolve(source, dest, _environment(store, records), key=True)
        bucket, key = where.bucket, where.rest
        if not bucket or not key:
            raise ConfigError(f"SOURCE must be BUCKET/KEY, got {source!r}")
        _require_other_dest(bucket, where.dest_bucket)
        engine = local_executor(manifest, where.env)
        payload = {"bucket": bucket, "key": key, "dest_bucket": where.dest_bucket,
                   "function": spec.name, "materialize": materialize,
                   **_function_params(spec, size, fmt, quality, param)}
        activation = engine.invoke(f"{PACKAGE}/{sequence_of(spec.name)}", payload)
    except OwdedupError as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(activation.result, indent=2, sort_keys=True))
    if not activation.success:
        raise typer.Exit(1)


@app.command("map")
def map_command(
    function: Annotated[str, typer.Argument(
        help="Function to run, e.g. thumbnail, or a Python file: ./myfunction.py, or with "
             "--platform openwhisk a wrapped action's conductor: myfunction-dedup")],
    source: Annotated[str, typer.Argument(
        help="SRC_BUCKET[/PREFIX], or a folder path (/abs, ./rel, ../rel): every object under it")],
    dest: Annotated[str, typer.Argument(help="DEST_BUCKET, or a folder path")],
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Parallel processes")] = (
        max(1, os.cpu_count() or 1)
    ),
    size: SizeOpt = None,
    fmt: FormatOpt = None,
    quality: QualityOpt = None,
    param: ParamOpt = None,
    materialize: MaterializeOpt = False,
    results: Annotated[
        Path | None, typer.Option("--results", help="Write one JSON line per input object")
    ] = None,
    store: StoreOpt = None,
    records: RecordsOpt = None,
    manifest: ManifestOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    platform: Annotated[str, typer.Option(
        "--platform", help="local: worker processes here; openwhisk: invoke the deployed "
        "sequence on OW_APIHOST/OW_AUTH (or ~/.wskprops), once per distinct missing content")
    ] = "local",
    window: Annotated[int | None, typer.Option(
        "--window", min=1, help="openwhisk: most invocations in flight (default: the "
        "namespace's concurrentInvocations limit)")] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Judge known bad inputs again instead of answering their "
        "recorded refusal: a still-bad one keeps it, a now-good one computes")] = False,
) -> None:
    """Run the function on every object under SOURCE, in parallel, and summarise.

    FUNCTION may also be a Python file (./myfunction.py): its main(params) runs on each
    object, one after the other in this process, with the wrapper's semantics (issue 10).

    With --platform openwhisk, FUNCTION may be a conductor made by owdedup wrap
    (myfunction-dedup): each object goes as its first object reference (bucket/key), DEST as
    dest_bucket (- for none) with every --param, and only calls its records do not hold are
    invoked.

    Exit status: 0 when every object was computed or deduplicated and recorded; 1 when an
    object failed; 3 when nothing failed but some records were not written (the record store
    failed: the outputs are valid, the next run computes those objects again).
    """
    from owdedup.mapper import FAILED, MapRequest, ObjectResult

    if retry_failed and (_is_python_file(function) or (
            platform == "openwhisk" and function not in registry.names())):
        raise _fail("--retry-failed applies to registered functions only: a Python file or "
                    "a wrapped action records no refusals to retry")
    if _is_python_file(function):
        _refuse_thumbnail_options(size, fmt, quality, materialize, manifest)
        if platform != "local":
            raise _fail("a Python file runs locally only (--platform local)")
        _map_file(Path(function), source, dest, param, store, records, results)
        return
    if platform not in ("local", "openwhisk"):
        raise _fail(f"--platform must be local or openwhisk, not {platform!r}")
    if platform == "openwhisk" and function not in registry.names():
        _refuse_thumbnail_options(size, fmt, quality, materialize, manifest, "a wrapped action")
        _map_wrapped(function, source, dest, param, store, records, results, window, quiet)
        return
    try:
        spec = get_function(function)
        params = {**_function_params(spec, size, fmt, quality, param),
                  "materialize": materialize, **({"retry_failed": True} if retry_failed else {})}
        spec.normalise(params)  # a bad parameter fails before any work starts
        where = locations.resolve(source, dest, _environment(store, records), key=False)
        bucket, prefix, dest, env = where.bucket, where.rest, where.dest_bucket, where.env
        _require_other_dest(bucket, dest)
        context = Context(Settings.resolve({}, env))
        unreadable: dict[str, str] = {}
        sizes = {info.key: info.size for info in context.store.list(
            bucket, prefix, on_unreadable=unreadable.__setitem__)}
        keys = list(sizes)
        context.close()
    except OwdedupError as exc:
        raise _fail(str(exc)) from None
    refused = {**unreadable, **(_materialize_collisions(keys) if materialize else {})}
    keys = sorted({*keys, *unreadable})
    request = MapRequest(
        function=spec.name, sequence=f"{PACKAGE}/{sequence_of(spec.name)}",
        hash_action=f"{PACKAGE}/hash",
        src_bucket=bucket, dest_bucket=dest, params=params,
        manifest=manifest, env=env,
    )
    quiet = quiet or not sys.stderr.isatty()
    try:
        if platform == "openwhisk":
            from owdedup.openwhisk.command import run_on_openwhisk  # only this path needs it

            summary = run_on_openwhisk(request, [k for k in keys if k not in refused],
                                       window=window, quiet=quiet, console=console)
            summary.results = sorted(
                [*summary.results,
                 *(ObjectResult(k, FAILED, error=f"{k}: {why}") for k, why in refused.items())],
                key=lambda entry: entry.key)
        else:
            summary = _run_with_progress(request, keys, sizes, refused, workers, quiet)
    except OwdedupError as exc:  # the workers could not start (a bad manifest, say)
        raise _fail(str(exc)) from None
    _finish_map(summary, results)


def _finish_map(summary: MapSummary, results: Path | None) -> None:
    """The --results lines, the summary and the exit status of a map."""
    if results is not None:
        with results.open("w") as out:
            for entry in summary.results:
                out.write(json.dumps(entry.to_json(), sort_keys=True) + "\n")
    _print_summary(summary)
    if summary.failed:
        raise typer.Exit(EXIT_FAILED)
    if summary.not_recorded:
        raise typer.Exit(EXIT_NOT_RECORDED)


def _is_python_file(function: str) -> bool:
    from owdedup.pyfile import is_python_file

    return is_python_file(function)


def _refuse_thumbnail_options(size: str | None, fmt: str | None, quality: int | None,
                              materialize: bool, manifest: Path | None,
                              what: str = "a Python file") -> None:
    given = [name for name, value in (("--size", size), ("--format", fmt),
                                      ("--quality", quality), ("--manifest", manifest))
             if value is not None] + (["--materialize"] if materialize else [])
    if given:
        raise _fail(f"{', '.join(given)}: not for {what} (give its parameters with "
                    "--param NAME=VALUE)")


def _file_params(pairs: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise _fail(f"bad --param {pair!r}: give NAME=VALUE")
        params[name] = value
    return params


def _invoke_file(path: Path, source: str, dest: str, pairs: list[str] | None,
                 store: str | None, records: str | None) -> None:
    from owdedup.pyfile import FileRunner

    try:
        where = locations.resolve(source, dest, _environment(store, records), key=True)
        if not where.bucket or not where.rest:
            raise ConfigError(f"SOURCE must be BUCKET/KEY, got {source!r}")
        _require_other_dest(where.bucket, where.dest_bucket)
        runner = FileRunner(path, where.env)
    except OwdedupError as exc:
        raise _fail(str(exc)) from None
    try:
        result = runner(where.bucket, where.rest, where.dest_bucket, _file_params(pairs))
    finally:
        runner.close()
    typer.echo(json.dumps(result, indent=2, sort_keys=True))
    if "error" in result:
        raise typer.Exit(EXIT_FAILED)


def _map_file(path: Path, source: str, dest: str, pairs: list[str] | None,
              store: str | None, records: str | None, results: Path | None) -> None:
    """Every object under SOURCE through the file's main, one after the other."""
    from owdedup.pyfile import FileRunner, run_over

    params = _file_params(pairs)
    try:
        where = locations.resolve(source, dest, _environment(store, records), key=False)
        _require_other_dest(where.bucket, where.dest_bucket)
        context = Context(Settings.resolve({}, where.env))
        keys = [info.key for info in context.store.list(where.bucket, where.rest)]
        context.close()
        runner = FileRunner(path, where.env)
    except OwdedupError as exc:
        raise _fail(str(exc)) from None
    counts = {"computed": 0, "deduplicated": 0, "failed": 0}
    try:
        outcomes = list(run_over(runner, where.bucket, keys, where.dest_bucket, params))
    finally:
        runner.close()
    for outcome in outcomes:
        counts[outcome.status] += 1
        if outcome.status == "failed":
            console.print(f"[red]failed[/red] {outcome.key}: {outcome.result.get('error')}")
    if results is not None:
        with results.open("w") as out:
            for outcome in outcomes:
                out.write(json.dumps(outcome.to_json(), sort_keys=True) + "\n")
    console.print(f"{len(outcomes)} objects: {counts['computed']} computed, "
                  f"{counts['deduplicated']} deduplicated, {counts['failed']} failed")
    if counts["failed"]:
        raise typer.Exit(EXIT_FAILED)


def _map_wrapped(conductor: str, source: str, dest: str, pairs: list[str] | None,
                 store: str | None, records: str | None, results: Path | None,
                 window: int | None, quiet: bool) -> None:
    """``map CONDUCTOR SRC DEST --platform openwhisk``: a conductor made by ``owdedup wrap``,
    its stores read from its own bound configuration (so the records are its own)."""
    from owdedup.openwhisk.command import run_wrapped_on_openwhisk

    if store is not None or records is not None:
        raise _fail(f"--store/--records: {conductor} uses the stores it is bound to "
                    "(owdedup wrap binds them)")
    try:
        summary = run_wrapped_on_openwhisk(
            conductor, source, None if dest == "-" else dest, _file_params(pairs),
            window=window, quiet=quiet or not sys.stderr.isatty(), console=console)
    except OwdedupError as exc:
        raise _fail(str(exc)) from None
    _finish_map(summary, results)


def _materialize_collisions(keys: list[str]) -> dict[str, str]:
    """Objects whose --materialize copies would overwrite those of an earlier key (``a``,
    ``a.jpg`` and ``a.png`` all give ``a_<size>.<ext>``): refused before anything is
    written, the first key in order keeps the name."""
    owner: dict[str, str] = {}
    refused: dict[str, str] = {}
    for key in keys:
        stem = materialized_stem(key)
        if stem in owner:
            refused[key] = (f"its --materialize copies ({stem}_<size>.<ext>) would overwrite "
                            f"those of {owner[stem]}; rename one of them")
        else:
            owner[stem] = key
    return refused


def _run_with_progress(
    request: MapRequest, keys: list[str], sizes: dict[str, int], refused: dict[str, str],
    workers: int, quiet: bool,
) -> MapSummary:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from owdedup.mapper import run_map
    from owdedup.workpool import WorkerPool

    # Workers first: forked before the progress bar starts its thread (see workpool).
    with WorkerPool(workers, request.manifest, request.env) as pool:
        if quiet:
            return run_map(request, keys, workers=workers, failed=refused, pool=pool,
                           sizes=sizes)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            hashing = progress.add_task("hashing", total=len(keys))
            processing = progress.add_task(request.function, total=len(keys))
            return run_map(
                request, keys, workers=workers, failed=refused, pool=pool, sizes=sizes,
                on_hashed=lambda _key: progress.advance(hashing),
                on_result=lambda _result: progress.advance(processing),
            )


def _print_summary(summary: MapSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    from owdedup.mapper import COMPUTED, DEDUPLICATED, FAILED

    table = Table(title="owdedup map", show_header=False)
    table.add_row("objects", str(len(summary.results)))
    table.add_row("computed", str(summary.count(COMPUTED)))
    table.add_row("deduplicated", str(summary.count(DEDUPLICATED)))
    if summary.coalesced:
        table.add_row("  of which waited for identical work in flight", str(summary.coalesced))
    table.add_row("failed", str(summary.count(FAILED)))
    if summary.recorded_failures:
        table.add_row("  of which known bad inputs (not read again)",
                      str(summary.recorded_failures))
    if summary.not_recorded:
        table.add_row("records not written", str(len(summary.not_recorded)))
    table.add_row("wall time", f"{summary.wall_s:.2f} s")
    table.add_row("compute time", f"{summary.compute_ms / 1000:.2f} s")
    table.add_row("compute time saved", f"{summary.saved_ms / 1000:.2f} s")
    Console().print(table)
    for entry in summary.failed:
        console.print(f"[red]failed[/red] {entry.error}", highlight=False)
    causes = sorted({entry.record_error or "" for entry in summary.not_recorded})
    if causes:
        console.print(
            f"[yellow]records not written: {len(summary.not_recorded)}[/yellow] (the outputs "
            f"are valid; the next run computes these objects again): {'; '.join(causes)}",
            highlight=False)


@app.command()
def watch(
    brokers: Annotated[
        str | None, typer.Option("--brokers", help=f"Kafka brokers [env: {env_names.KAFKA}]")
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option("--topic", help=f"Upload-event topic [env: {env_names.KAFKA_TOPIC}]")
    ] = None,
    group: Annotated[str, typer.Option("--group", help="Kafka consumer group")] = "owdedup-watch",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1)] = 2,
    retry_for: Annotated[
        float, typer.Option("--retry-for", help="Seconds to retry a service failure")
    ] = 300.0,
    store: StoreOpt = None,
    records: RecordsOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Process upload events from Kafka as OpenWhisk's feed and rule would, until Ctrl-C."""
    import signal
    import threading

    from owdedup.watch import ObjectOutcome, WatchConfig, run_watch

    env = _environment(store, records)
    brokers = brokers or env.get(env_names.KAFKA)
    topic = topic or env.get(env_names.KAFKA_TOPIC)
    if not brokers or not topic:
        raise _fail(f"no Kafka brokers/topic: pass --brokers/--topic or set {env_names.KAFKA} "
                    f"and {env_names.KAFKA_TOPIC} (eval \"$(owdedup services env)\")")
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        console.print("stopping: finishing the work in flight…")
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    def report(outcome: ObjectOutcome) -> None:
        typer.echo(f"{'ok' if outcome.ok else 'failed'} {outcome.key}: {outcome.detail}")

    console.print(f"watching {topic} on {brokers} (group {group}, {workers} workers)")
    config = WatchConfig(brokers, topic, group=group, workers=workers, retry_for=retry_for,
                         manifest=manifest, env=env)
    try:
        processed = run_watch(config, stop, report)
    except OwdedupError as exc:  # the workers could not start (a bad setting, say)
        raise _fail(str(exc)) from None
    console.print(f"stopped after {processed} messages")


@app.command()
def explain(
    source: Annotated[str, typer.Argument(help="SRC_BUCKET/KEY")],
    function: Annotated[str, typer.Option(
        "--function", help="Function, or a wrapped action's conductor (myfunction-dedup), "
        "read on OW_APIHOST/OW_AUTH")] = "thumbnail",
    size: SizeOpt = None,
    fmt: FormatOpt = None,
    quality: QualityOpt = None,
    param: ParamOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON")] = False,
    store: StoreOpt = None,
    records: RecordsOpt = None,
) -> None:
    """Why a run of SRC_BUCKET/KEY would hit, wait or miss: its digest, its identity's parts,
    its record, lease or negative record, and the records of the same content under other
    identities with what differs. Writes nothing."""
    from owdedup import explain as explaining

    bucket, _, key = source.partition("/")
    if bucket and key and function not in registry.names():
        _refuse_thumbnail_options(size, fmt, quality, False, None, "a wrapped action")
        _explain_wrapped(function, bucket, key, param, store, records, as_json)
        return
    try:
        if not bucket or not key:
            raise ConfigError(f"SOURCE must be BUCKET/KEY, got {source!r}")
        spec = get_function(function)
        context = Context(Settings.resolve({}, _environment(store, records)))
        try:
            explained = explaining.explain(context, bucket, key, spec.name,
                                           _function_params(spec, size, fmt, quality, param))
        finally:
            context.close()
    except OwdedupError as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(explained, indent=2, sort_keys=True) if as_json
               else explaining.as_text(explained))


def _explain_wrapped(conductor: str, bucket: str, key: str, pairs: list[str] | None,
                     store: str | None, records: str | None, as_json: bool) -> None:
    """``explain ... --function CONDUCTOR``: a call of a wrapped action, keyed as the
    conductor keys it, with the stores it is bound to."""
    from owdedup.explain_wrapped import as_text, explain_wrapped
    from owdedup.openwhisk.client import Credentials, OpenWhiskClient
    from owdedup.openwhisk.wrapped_map import WrappedTarget

    if store is not None or records is not None:
        raise _fail(f"--store/--records: {conductor} uses the stores it is bound to "
                    "(owdedup wrap binds them)")
    try:
        client = OpenWhiskClient(Credentials.resolve())
        try:
            target = WrappedTarget.read(client, conductor)
        finally:
            client.close()
        context = Context(target.config.settings)
        try:
            explained = explain_wrapped(target, context, bucket, key, _file_params(pairs))
        finally:
            context.close()
    except OwdedupError as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(explained, indent=2, sort_keys=True) if as_json
               else as_text(explained))


@app.command()
def stats(records: RecordsOpt = None) -> None:
    """Per function: records, hits, misses, the compute time and bytes saved; where there are
    any: calls that waited for identical work in flight (coalesced), leases taken over,
    negative records (refusals) and calls they answered (refused)."""
    from rich.console import Console
    from rich.table import Table

    try:
        context = Context(Settings.resolve({}, _environment(None, records)))
        rows = context.records.stats()
        where = context.records.describe()
    except OwdedupError as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"owdedup stats ({where})")
    # Identical work in flight and known bad inputs (issue 11): columns only where there
    # are some, so the usual table keeps its width.
    extra = [(title, field) for title, field in (
        ("coalesced", "coalesced"), ("take-overs", "took_over"), ("refusals", "failures"),
        ("refused", "refused")) if any(getattr(row, field) for row in rows)]
    for column in ("function", "records", "hits", "misses", "hit rate", "compute saved",
                   "bytes saved", *(title for title, _ in extra)):
        table.add_column(column, justify="left" if column == "function" else "right")
    for row in rows:
        seen = row.hits + row.misses
        rate = f"{100 * row.hits / seen:.1f}%" if seen else "-"
        table.add_row(row.function, str(row.records), str(row.hits), str(row.misses), rate,
                      f"{row.saved_ms / 1000:.2f} s", _bytes(row.saved_bytes),
                      *(str(getattr(row, field)) for _, field in extra))
    Console().print(table)


def _bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"


def main() -> None:  # pragma: no cover - console-script entry point alias
    app()
