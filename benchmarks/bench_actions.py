"""The action zips as OpenWhisk's python:3.11 runtime runs them: cold start, memory, warm
latency through ``owdedup serve``, sizes; in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_actions.py --out bench-results/actions \\
        [--photos /work/shared/corpus/photos]

How a zip runs here (as in ``tests/deploy/test_build.py`` and ``owdedup serve``): unpacked by
the one unpacker (:mod:`owdedup.actionloop.code`: ``__main__.py`` renamed ``main__.py``, the
runtime's launcher copied in as ``exec__.py``, as the runtime's ``compile`` step does),
started by the base interpreter with ``-I -S`` (nothing of this project's venv), with only
the zip and the runtime image's packages (:mod:`owdedup.actionloop.site`: requests 2.32.2,
python-dateutil 2.8.2, ... byte-compiled, prepared once in the cache) on ``sys.path``,
through a probe that calls the launcher's own steps: ``prepare`` (the runtime's packages,
``exec`` of ``virtualenv/bin/activate_this.py``), ``load_main`` (``from main__ import
main``), then ``call`` (``main(params)`` under the runtime's contract). The backends are
local (a folder store ``file:///tmp/...`` and SQLite records), so nothing needs a network.

c. Cold start of each action in a fresh process, median of ``--runs`` processes per action
   (interleaved across actions), split into: interpreter start (spawn to the launcher's first
   line, plus the launcher's own stdlib imports), ``activate_this`` + ``import main__`` (and
   everything it imports), the first ``main()`` call, and the network clients the deployed
   action imports on its first call but the local backends do not: ``owdedup.runtime.stores.s3``
   (minio, urllib3) for hash, lookup and thumbnail; ``owdedup.runtime.records.couchdb._sdk()``
   (the urllib3 transport; ibmcloudant is loaded only for IAM ``apikey`` auth) for lookup and
   record; ``requests`` for
   dispatch. Measured: "cold" = activate + import + first call; "cold + clients" = that plus
   the client imports. Targets (cold + clients): hash, lookup, record < 150 ms; thumbnail
   < 300 ms. First calls: hash streams a corpus photo (its cached digest removed first),
   lookup finds its record (the hit path), thumbnail computes the photo's 256 px thumbnail
   (a miss: Pillow is imported and the photo decoded; its compute time is shown), record
   inserts into a fresh copy of the record store, dispatch starts the sequence for one
   upload event through a stub OpenWhisk API (so its first call imports requests).
   Two variants: (c) the unpacked folder has already been run once (the second process in
   a container); (cf) every process runs in a folder unpacked afresh: what a new OpenWhisk
   container pays. The zips ship hash-based ``.pyc`` files, so (cf) compiles only
   ``main__.py``; without them it would compile every module on first import.
i. One extra process per action with ``-X importtime`` (which inflates times, so it is used to
   attribute, not to total): self time summed per top-level package after the launcher's own
   imports, the 10 biggest, the phase that imported each (import of main__ / first call /
   clients) and the import chain that pulled it in, with whether the deployed hit path needs it.
m. Peak memory (``VmHWM`` of the action's process; the deployed clients are imported
   before the call so the peak includes them): thumbnail on a 50-megapixel JPEG (a corpus
   photo upscaled to 8660x5773, quality 90), on a 50 MP RGBA PNG and on a 50 MP 16-bit grey
   PNG (both exactly within ``max_pixels``); target <= 256 MiB (OpenWhisk's default memory
   limit). For each, the bytes per input pixel the call added and the pixel limit that would
   fit 256 MiB at that rate. hash on a sparse 100 MiB and 1 GiB object of the folder store
   (removed afterwards): target < 64 MiB, and the 1 GiB peak within 4 MiB of the 100 MiB one.
w. Warm latency through ``owdedup serve`` (a subprocess on a free port, a generated key,
   ``--runtime-site``): the zips deployed through its REST API (package ``owdedup`` bound to a
   folder store + SQLite, the actions as binary zips, the sequence ``dedup-thumbnail``), then
   ``--invokes`` blocking invokes with ``result=true`` per configuration after warm-up
   invokes, interleaved, timed at the client on a new connection each (as ``wsk`` does):
   median and p95. A no-op action gives the server's own cost per invoke, on a new connection
   and on a kept-alive one (which adds a Nagle / delayed-ACK stall, see ``NOOP``). Hit / miss per
   action: hash with the store's cached digest (checksum) / streamed; lookup with / without
   the record; thumbnail passing hits through / computing; record of hits (nothing written) /
   inserting; the sequence on a duplicate / on new content (record and cached digest removed
   before each invoke, untimed).
s. Zip sizes per action and their base64 size in the create request; limits: zip < 48 MiB
   (OpenWhisk code size), base64 < 50 MiB (a standalone controller's request limit).

Outputs in ``--out``: ``results.json`` (environment, every raw timing, the checks) and
``chart.png``; the tables are printed. ``--only`` runs a subset (``cold``, ``imports``,
``memory``, ``warm``, ``sizes``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import math
import os
import re
import secrets
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL
from PIL import Image, ImageMath
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING or __package__:  # python -m benchmarks.bench_actions, and mypy
    from benchmarks import common
else:  # python benchmarks/bench_actions.py: benchmarks/ is sys.path[0]
    import common

from owdedup.actionloop.code import unpack
from owdedup.actionloop.site import prepare_runtime_site
from owdedup.deploy.build import build_actions, request_bytes
from owdedup.deploy.runtime import (
    MAX_ZIP_BYTES,
    REQUEST_LIMIT_BYTES,
    SITE_PACKAGES,
)
from owdedup.runtime.records import Record, RecordStore, open_records

PROJECT = Path(__file__).resolve().parent.parent
MANIFEST = PROJECT / "manifest.yaml"
ACTIONS = ("hash", "lookup", "thumbnail", "record", "dispatch")
SECTIONS = ("cold", "imports", "memory", "warm", "sizes")
TARGET_MS = {"hash": 150.0, "lookup": 150.0, "record": 150.0, "thumbnail": 300.0}
MEMORY_LIMIT_MIB = 256.0
HASH_LIMIT_MIB = 64.0
HASH_GROWTH_MIB = 4.0
MIB = 1 << 20
SRC, DEST = "photos", "thumbs"
SIZES = [256]
BIG_SIZE = (8660, 5773)  # 49,994,180 pixels: just within max_pixels = 50,000,000
S3_CLIENT = "owdedup.runtime.stores.s3"
COUCH_CLIENT = "owdedup.runtime.records.couchdb:_sdk"
#: What each deployed action imports on its first call that the local backends do not.
CLIENTS: dict[str, tuple[str, ...]] = {
    "hash": (S3_CLIENT,),  # HEAD (+ GET when the object has no checksum)
    "lookup": (S3_CLIENT, COUCH_CLIENT),  # records GET, then HEAD of each hit's output
    "thumbnail": (S3_CLIENT,),  # GET + PUT on a miss
    "record": (COUCH_CLIENT,),  # records PUT (the store only with materialize)
    "dispatch": ("requests",),  # the OpenWhisk REST API
}
SEQUENCE = ("hash", "lookup", "thumbnail", "record")

# What the deployed hit path (hash HEAD -> lookup GET + HEAD -> pass-through -> nothing) needs
# of each top-level package, for the import table. Judged from the code, not measured.
HIT_PATH_NOTES: dict[str, str] = {
    "minio": "needed (S3 HEAD / GET / PUT), but a third of it is minio.minioadmin",
    "Crypto": "NO: pycryptodome, only for minio.crypto (MinioAdmin)",
    "argon2": "NO: only for minio.crypto (MinioAdmin)",
    "_argon2_cffi_bindings": "NO: only for minio.crypto (MinioAdmin)",
    "cffi": "NO: pycryptodome's cffi backend / argon2",
    "_cffi_backend": "NO: argon2 / pycryptodome",
    "pycparser": "NO: cffi parsing pycryptodome's cdefs",
    "urllib3": "needed (HTTP for minio and requests)",
    "ibmcloudant": "needed (CouchDB GET); 1 module of API models",
    "ibm_cloud_sdk_core": "needed (base service, auth)",
    "jwt": "NO: IAM token auth only (Cloudant apikey)",
    "requests": "needed by ibm_cloud_sdk_core",
    "charset_normalizer": "imported by requests; unused for JSON",
    "dateutil": "ibm_cloud_sdk_core (datetime helpers)",
    "PIL": "NO: miss only (already lazy)",
    "sqlite3": "NO: local SQLite backend only",
    "owdedup": "needed (own code)",
    "main__": "needed (the action)",
    "typing_extensions": "minio",
    "ssl": "needed for https endpoints",
    "http": "needed (http.client)",
    "certifi": "needed for https endpoints",
    "idna": "requests",
    "xml": "minio (S3 XML bodies)",
    "dataclasses": "stdlib, many users",
    "typing": "stdlib, many users",
    "logging": "stdlib, many users",
    "json": "stdlib",
    "site": "activate_this.py (the real runtime has it already)",
}



def hit_path_note(package: str, chain: Sequence[str]) -> str:
    if "owdedup.runtime.identity" in chain and package in ("importlib", "email", "zipfile", "csv"):
        return ("deferrable in owdedup.runtime.identity (unused with _pins.json), but urllib3 "
                "imports importlib.metadata anyway: no gain once a client is imported")
    if package in ("importlib", "email"):
        return f"stdlib, for {chain[-1] if chain else '?'}"
    return HIT_PATH_NOTES.get(package, "")


# -- the probe around the launcher -----------------------------------------------------------------

#: Runs one unpacked action (``python -I -S -c PROBE`` in its folder) through the runtime's
#: own launcher, ``exec__.py`` (the copy of :mod:`owdedup.actionloop.launcher` that the one
#: unpacker puts there, as the runtime's ``compile`` does; run as a script, as the image runs
#: it): ``prepare`` (``sys.path``, the runtime's packages, ``activate_this.py``), ``load_main``
#: (``from main__ import main``), ``call`` (the runtime's contract). Stamps each phase with
#: CLOCK_MONOTONIC (shared by all processes); reads one request file, writes one report file.
PROBE = r'''
import time
_t0 = time.monotonic()
import json, os, runpy, sys, types
request_file, report_file = sys.argv[1], sys.argv[2]
with open(request_file) as f:
    request = json.load(f)
os.environ.update(request.get("env") or {})
launcher = types.SimpleNamespace(**runpy.run_path("exec__.py", run_name="exec__"))


def _status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024.0
    return out


def _mark(name):
    if request.get("markers"):
        sys.stderr.write("@@phase " + name + "\n")
        sys.stderr.flush()


stamps = {"t0": _t0, "setup": time.monotonic()}
rss = {}
_mark("activate")
launcher.prepare(os.getcwd(), [request["runtime_site"]] if request.get("runtime_site") else [])
stamps["activated"] = time.monotonic()
_mark("import")
main = launcher.load_main("main")
stamps["imported"] = time.monotonic()
rss["imported"] = _status()
new = {}
result = None
for phase in (["clients", "call"] if request.get("clients_first") else ["call", "clients"]):
    _mark(phase)
    before = set(sys.modules)
    if phase == "call":
        result = launcher.call(main, request["params"])
    else:
        for target in request.get("clients") or []:
            name, _, function = target.partition(":")
            if name.startswith("owdedup.runtime.") and not os.path.isdir("owdedup/runtime"):
                name = "owdedup." + name[len("owdedup.runtime."):]  # a zip from before issue 7
            __import__(name)
            if function:
                getattr(sys.modules[name], function)()
    stamps[phase] = time.monotonic()
    rss[phase] = _status()
    new[phase] = sorted(set(sys.modules) - before)
_mark("end")
rss["end"] = _status()
with open(report_file, "w") as f:
    json.dump({"stamps": stamps, "rss": rss, "new_modules": new, "result": result,
               "modules": len(sys.modules)}, f)
'''


# -- results -----------------------------------------------------------------------------------


@dataclass
class Check:
    """One measurement compared against its target."""

    id: str
    name: str
    measured: str
    value: float | None = None
    op: str = ""  # "<", "<=" or ">="
    target: float | None = None
    unit: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        if self.op == "<":
            return self.value < self.target
        return self.value <= self.target if self.op == "<=" else self.value >= self.target


@dataclass
class ProcRun:
    """One action process: phase times (ms), RSS (MiB) and what it returned."""

    times: dict[str, float]
    rss: dict[str, dict[str, float]]
    peak_mib: float  # VmHWM at the end: the process's peak RSS
    result: Any
    new_modules: dict[str, list[str]]
    stderr: str = ""

    @property
    def cold_ms(self) -> float:
        return self.times["activate"] + self.times["import"] + self.times["call"]

    @property
    def cold_clients_ms(self) -> float:
        return self.cold_ms + self.times["clients"]

    def to_json(self) -> dict[str, Any]:
        return {"times_ms": self.times, "rss_mib": self.rss, "peak_mib": self.peak_mib,
                "new_modules": {k: len(v) for k, v in self.new_modules.items()}}


@dataclass
class Report:
    environment: dict[str, Any]
    cold: dict[str, dict[str, list[ProcRun]]] = field(default_factory=dict)  # variant, action
    imports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    import_totals: dict[str, dict[str, float]] = field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    warm: dict[str, list[float]] = field(default_factory=dict)  # "action/hit" -> ms
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "cold": {variant: {action: {"summary": cold_summary(runs),
                                        "runs": [r.to_json() for r in runs]}
                               for action, runs in actions.items()}
                     for variant, actions in self.cold.items()},
            "imports_top": self.imports,
            "imports_total_ms": self.import_totals,
            "memory": self.memory,
            "warm_ms": {name: {"median": statistics.median(ms), "p95": common.percentile(ms, 95),
                               "min": min(ms), "runs": ms}
                        for name, ms in self.warm.items()},
            "sizes": self.sizes,
            "checks": [{**asdict(c), "passed": c.passed} for c in self.checks],
        }


# -- helpers -----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cold_summary(runs: Sequence[ProcRun]) -> dict[str, float]:
    """Median of each phase, and the median of the per-process sums (not a sum of medians)."""
    phases = ("interpreter", "activate", "import", "call", "clients")
    summary = {phase: median([r.times[phase] for r in runs]) for phase in phases}
    summary["activate_import"] = median([r.times["activate"] + r.times["import"] for r in runs])
    summary["cold"] = median([r.cold_ms for r in runs])
    summary["cold_clients"] = median([r.cold_clients_ms for r in runs])
    summary["cold_clients_p95"] = common.percentile([r.cold_clients_ms for r in runs], 95)
    summary["total"] = median([r.times["interpreter"] + r.cold_clients_ms for r in runs])
    summary["compute"] = median([float(r.result.get("compute_ms") or 0.0) for r in runs])
    summary["rss_mib"] = median([r.rss["clients"]["VmRSS"] for r in runs])
    return summary


def base_python() -> str:
    """The interpreter the venv was made from: none of this project's packages on its path."""
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    version = subprocess.run([str(base), "-I", "-S", "-c", "import sys; print(sys.version[:4])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != "3.11":
        sys.exit(f"the runtime is CPython 3.11; {base} is {version}")
    return str(base)




def clear_xattrs(path: Path) -> None:
    """Forget the folder store's cached digest: it is bound to the file's version (size,
    mtime, ctime, inode), so rewriting the same bytes makes the next hash a computed one."""
    path.write_bytes(path.read_bytes())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def minio_event(bucket: str, key: str, size: int) -> dict[str, Any]:
    """One upload as MinIO publishes it (eventVersion 2.0)."""
    name = "s3:ObjectCreated:Put"
    obj = {"key": key, "size": size, "eTag": "abc", "sequencer": "17A"}
    return {"EventName": name, "Key": f"{bucket}/{key}", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "eventName": name,
        "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj},
    }]}


class _StubApi(BaseHTTPRequestHandler):
    """Answers every invoke as OpenWhisk does a non-blocking one: 202 with an activation id."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"activationId": uuid.uuid4().hex}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def stub_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubApi)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- running an action in a fresh process ------------------------------------------------------


class Harness:
    """Runs unpacked actions, one fresh process per call, as the runtime does."""

    def __init__(self, python: str, runtime_site: Path, work: Path) -> None:
        self.python = python
        self.runtime_site = runtime_site
        self.work = work
        self.count = 0
        self.env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8",
                    "LC_ALL": "C.UTF-8", "HOME": os.environ.get("HOME", "/tmp")}

    def run(self, folder: Path, params: Mapping[str, Any], *, clients: Sequence[str] = (),
            env: Mapping[str, str] | None = None, importtime: bool = False,
            clients_first: bool = False) -> ProcRun:
        self.count += 1
        request_file = self.work / f"request-{self.count}.json"
        report_file = self.work / f"report-{self.count}.json"
        request_file.write_text(json.dumps({
            "params": dict(params), "clients": list(clients), "env": dict(env or {}),
            "runtime_site": str(self.runtime_site), "markers": importtime,
            "clients_first": clients_first,
        }))
        argv = [self.python, "-I", "-S", *(["-X", "importtime"] if importtime else []),
                "-c", PROBE, str(request_file), str(report_file)]
        started = time.monotonic()
        done = subprocess.run(argv, cwd=folder, env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        request_file.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"{folder.name}: exit {done.returncode}\n{done.stderr[-4000:]}")
        report = json.loads(report_file.read_text())
        report_file.unlink()
        stamps = report["stamps"]
        first, second = ("clients", "call") if clients_first else ("call", "clients")
        times = {
            "interpreter": (stamps["setup"] - started) * 1000,
            "activate": (stamps["activated"] - stamps["setup"]) * 1000,
            "import": (stamps["imported"] - stamps["activated"]) * 1000,
            first: (stamps[first] - stamps["imported"]) * 1000,
            second: (stamps[second] - stamps[first]) * 1000,
        }
        result = report["result"]
        if not isinstance(result, dict) or "error" in result:
            raise RuntimeError(f"{folder.name}: {result}\n{done.stderr[-4000:]}")
        # VmHWM, not ru_maxrss: Linux carries the parent's RSS at fork over into the child's
        # ru_maxrss across exec, while VmHWM belongs to the exec'd image alone.
        return ProcRun(times, report["rss"], report["rss"]["end"]["VmHWM"], result,
                       report["new_modules"], done.stderr if importtime else "")


@dataclass
class Scene:
    """A folder store with one photo, a SQLite record store, and each action's first call."""

    root: Path
    photo_key: str
    bound: dict[str, Any]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    before: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    env: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def bucket(self) -> Path:
        return self.root / "store" / SRC

    def call(self, action: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The parameters (after the action's pre-run step) and environment of a first call."""
        extra = self.before[action]() if action in self.before else {}
        return {**self.params[action], **extra}, self.env.get(action, {})


def make_scene(root: Path, photo: Path) -> Scene:
    bucket = root / "store" / SRC
    bucket.mkdir(parents=True)
    shutil.copyfile(photo, bucket / photo.name)
    bound = {"store": (root / "store").as_uri(), "records": f"sqlite://{root / 'records.sqlite'}",
             "dest_bucket": DEST}
    return Scene(root, photo.name, bound)


def prepare_scene(scene: Scene, harness: Harness, folders: Mapping[str, Path],
                  api_url: str) -> None:
    """Run the sequence once (which also caches the bytecode of every folder), then set up
    each action's first call; checks that each returns what it should."""
    job = {**scene.bound, "bucket": SRC, "key": scene.photo_key, "sizes": SIZES}
    photo = scene.bucket / scene.photo_key
    clear_xattrs(photo)
    hashed = harness.run(folders["hash"], job, clients=CLIENTS["hash"]).result
    missed = harness.run(folders["lookup"], {**scene.bound, **hashed},
                         clients=CLIENTS["lookup"]).result
    assert not any(o["hit"] for o in missed["outputs"]), missed
    computed = harness.run(folders["thumbnail"], {**scene.bound, **missed},
                           clients=CLIENTS["thumbnail"]).result
    empty_records = scene.root / "records-before.sqlite"
    records_file = scene.root / "records.sqlite"
    if records_file.exists():
        shutil.copyfile(records_file, empty_records)
    recorded = harness.run(folders["record"], {**scene.bound, **computed},
                           clients=CLIENTS["record"]).result
    assert recorded["status"] == "computed" and recorded["recorded"], recorded

    counter = iter(range(1_000_000))

    def fresh_records() -> dict[str, Any]:
        target = scene.root / f"records-{next(counter)}.sqlite"
        if empty_records.exists():
            shutil.copyfile(empty_records, target)
        return {"records": f"sqlite://{target}"}

    def uncached() -> dict[str, Any]:
        clear_xattrs(photo)
        return {}

    scene.params = {
        "hash": job,
        "lookup": {**scene.bound, **hashed},
        "thumbnail": {**scene.bound, **missed},
        "record": {**scene.bound, **computed},
        "dispatch": {**minio_event(SRC, scene.photo_key, photo.stat().st_size),
                     "dest_bucket": DEST},
    }
    scene.before = {"hash": uncached, "record": fresh_records}
    scene.env = {"dispatch": {"__OW_API_HOST": api_url, "__OW_API_KEY": "user:pass",
                              "__OW_NAMESPACE": "_"}}


def check_first_call(action: str, result: dict[str, Any]) -> None:
    outputs = result.get("outputs") or []
    if action == "hash":
        ok = result.get("digest_source") == "computed"
    elif action == "lookup":
        ok = all(o["hit"] for o in outputs)
    elif action == "thumbnail":
        ok = all(o["bytes"] > 0 for o in outputs)
    elif action == "record":
        ok = result.get("status") == "computed" and result.get("recorded") is True
    else:
        ok = len(result.get("invoked") or []) == 1
    if not ok:
        raise RuntimeError(f"{action}: unexpected first-call result {result}")


# -- c, cf: cold start -------------------------------------------------------------------------


def bench_cold(report: Report, harness: Harness, zips: Mapping[str, Path], scene: Scene,
               folders: Mapping[str, Path], runs: int, fresh_runs: int,
               console: Console) -> None:
    cached: dict[str, list[ProcRun]] = {a: [] for a in ACTIONS}
    fresh: dict[str, list[ProcRun]] = {a: [] for a in ACTIONS}
    for action in ACTIONS:  # one more warm-up each: page cache, bytecode of the clients
        params, env = scene.call(action)
        harness.run(folders[action], params, clients=CLIENTS[action], env=env)
    for round_ in range(max(runs, fresh_runs)):
        for action in ACTIONS:
            if round_ < runs:
                params, env = scene.call(action)
                run = harness.run(folders[action], params, clients=CLIENTS[action], env=env)
                check_first_call(action, run.result)
                cached[action].append(run)
            if round_ < fresh_runs:
                folder = unpack(zips[action], scene.root / "fresh" / f"{action}-{round_}")
                params, env = scene.call(action)
                run = harness.run(folder, params, clients=CLIENTS[action], env=env)
                check_first_call(action, run.result)
                fresh[action].append(run)
                shutil.rmtree(folder)
        console.print(f"  round {round_ + 1}", end="\r", highlight=False)
    report.cold = {"cached": cached, "fresh": fresh}
    for variant, label, tag in (("cached", "bytecode cached", "c"),
                                ("fresh", "fresh unpack", "cf")):
        for action, target in TARGET_MS.items():
            s = cold_summary(report.cold[variant][action])
            compute = (f", of which thumbnail compute {s['compute']:.0f}"
                       if action == "thumbnail" else "")
            report.checks.append(Check(
                f"{tag}.{action}", f"cold start {action} + clients ({label})",
                f"{s['cold_clients']:.0f} ms (cold {s['cold']:.0f}{compute} + clients "
                f"{s['clients']:.0f}; p95 {s['cold_clients_p95']:.0f}; +interp. "
                f"{s['interpreter']:.0f})",
                s["cold_clients"], "<", target, "ms"))


# -- i: -X importtime --------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)\s*$")


@dataclass
class ImportEntry:
    name: str
    self_us: int
    cumulative_us: int
    level: int
    phase: str
    parent: ImportEntry | None = None


def parse_importtime(stderr: str) -> list[ImportEntry]:
    """The ``-X importtime`` lines with their phase and importer (lines come children first:
    an entry's parent is the next entry one level up)."""
    entries: list[ImportEntry] = []
    pending: dict[int, list[ImportEntry]] = defaultdict(list)
    phase = "launcher"
    for line in stderr.splitlines():
        if line.startswith("@@phase "):
            phase = line.split()[1]
            continue
        match = _IMPORT_LINE.match(line)
        if not match:
            continue
        entry = ImportEntry(match[4], int(match[1]), int(match[2]), len(match[3]) // 2, phase)
        for child in pending.pop(entry.level + 1, []):
            child.parent = entry
        pending[entry.level].append(entry)
        entries.append(entry)
    return entries


def top_imports(entries: Sequence[ImportEntry], count: int = 10) -> list[dict[str, Any]]:
    """Self time per top-level package (after the launcher's own imports), biggest first."""
    groups: dict[str, list[ImportEntry]] = defaultdict(list)
    for entry in entries:
        if entry.phase not in ("launcher", "end"):
            groups[entry.name.split(".")[0]].append(entry)
    rows: list[dict[str, Any]] = []
    for package, members in groups.items():
        roots = [e for e in members
                 if e.parent is None or e.parent.name.split(".")[0] != package]
        root = max(roots, key=lambda e: e.cumulative_us)
        chain: list[str] = []
        parent = root.parent
        while parent is not None:
            chain.append(parent.name)
            parent = parent.parent
        chain.reverse()
        if len(chain) > 4:
            chain = [chain[0], "…", *chain[-3:]]
        rows.append({
            "package": package,
            "self_ms": sum(e.self_us for e in members) / 1000,
            "modules": len(members),
            "phase": root.phase,
            "via": " > ".join(chain) or "(top level)",
            "hit_path": hit_path_note(package, chain),
        })
    rows.sort(key=lambda row: row["self_ms"], reverse=True)
    return rows[:count]


def bench_imports(report: Report, harness: Harness, scene: Scene,
                  folders: Mapping[str, Path]) -> None:
    for action in ACTIONS:
        params, env = scene.call(action)
        run = harness.run(folders[action], params, clients=CLIENTS[action], env=env,
                          importtime=True)
        entries = parse_importtime(run.stderr)
        report.imports[action] = top_imports(entries)
        totals: dict[str, float] = defaultdict(float)
        for entry in entries:
            if entry.phase not in ("launcher", "end"):
                totals[entry.phase] += entry.self_us / 1000
        report.import_totals[action] = dict(totals)


# -- m: memory ---------------------------------------------------------------------------------


def make_big_inputs(photo: Path, bucket: Path, console: Console) -> dict[str, Path]:
    """50 MP inputs with photo content: a JPEG, an RGBA PNG and a 16-bit grey PNG."""
    console.print(f"  generating {BIG_SIZE[0]}x{BIG_SIZE[1]} inputs from {photo.name} ...",
                  highlight=False)
    with Image.open(photo) as source:
        big = source.convert("RGB").resize(BIG_SIZE, Image.Resampling.BICUBIC)
    paths = {"jpeg": bucket / "big-50mp.jpg", "png_rgba": bucket / "big-50mp-rgba.png",
             "png_grey16": bucket / "big-50mp-grey16.png"}
    big.save(paths["jpeg"], "JPEG", quality=90)
    rgba = big.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(BIG_SIZE))  # a soft vignette-like alpha
    rgba.save(paths["png_rgba"], "PNG")
    del rgba
    # Real 16-bit data: the photo's luminance in the high byte, sensor-like noise in the low
    # byte (a low byte that merely repeats the high one would compress unrealistically well).
    grey = ImageMath.lambda_eval(lambda a: a["hi"] * 256 + a["lo"], hi=big.convert("L"),
                                 lo=Image.effect_noise(BIG_SIZE, 40))
    assert isinstance(grey, Image.Image)
    grey.convert("I;16").save(paths["png_grey16"], "PNG")
    return paths


def _refusal(harness: Harness, folders: Mapping[str, Path], scene: Scene,
             planned: Mapping[str, Any]) -> tuple[float, float] | None:
    """(estimate, budget) in MiB when the thumbnail action refuses the input for memory."""
    try:
        harness.run(folders["thumbnail"], {**scene.bound, **planned},
                    clients=CLIENTS["thumbnail"], clients_first=True)
    except RuntimeError as exc:
        found = re.search(r"need about (\d+) MiB .* budget of (\d+) MiB", str(exc))
        if found is None:
            raise
        return float(found.group(1)), float(found.group(2))
    return None


def _shrink(path: Path, scale: float) -> None:
    """Resize the image at *path* in place by *scale*, keeping its format and mode."""
    with Image.open(path) as image:
        image.load()
        fmt, mode = image.format, image.mode
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        smaller = image.resize(size, Image.Resampling.BOX)
    if smaller.mode != mode:
        smaller = smaller.convert(mode)
    smaller.save(path, fmt)


def bench_memory(report: Report, harness: Harness, scene: Scene, folders: Mapping[str, Path],
                 photo: Path, runs: int, big_mib: int, console: Console) -> None:
    inputs = make_big_inputs(photo, scene.bucket, console)
    for label, path in inputs.items():
        job = {**scene.bound, "bucket": SRC, "key": path.name, "sizes": SIZES}
        hashed = harness.run(folders["hash"], job, clients=CLIENTS["hash"],
                             clients_first=True).result
        planned = harness.run(folders["lookup"], {**scene.bound, **hashed},
                              clients=CLIENTS["lookup"]).result
        refused = _refusal(harness, folders, scene, planned)
        if refused is not None:
            # Refused from its header (the memory budget): what matters is that the largest
            # image the budget accepts fits, so shrink this one to just under the budget.
            estimate, budget = refused
            _shrink(path, math.sqrt(0.95 * budget / estimate))
            hashed = harness.run(folders["hash"], job, clients=CLIENTS["hash"],
                                 clients_first=True).result
            planned = harness.run(folders["lookup"], {**scene.bound, **hashed},
                                  clients=CLIENTS["lookup"]).result
        peaks = []
        base = 0.0
        for _ in range(runs):
            run = harness.run(folders["thumbnail"], {**scene.bound, **planned},
                              clients=CLIENTS["thumbnail"], clients_first=True)
            peaks.append(run.peak_mib)
            base = run.rss["clients"]["VmRSS"]
        with Image.open(path) as image:
            pixels = image.width * image.height
            mode = image.mode
        peak = max(peaks)
        per_pixel = (peak - base) * MIB / pixels
        fits = (MEMORY_LIMIT_MIB - base) * MIB / per_pixel
        report.memory[f"thumbnail_{label}"] = {
            "file": path.name, "file_mib": path.stat().st_size / MIB, "pixels": pixels,
            "mode": mode, "peak_mib": peaks, "rss_before_call_mib": base,
            "bytes_per_pixel": per_pixel, "pixels_fitting_limit": fits,
            "refused_at_50mp_estimate_mib": None if refused is None else refused[0],
        }
        what = ("50 MP" if refused is None
                else f"{pixels / 1e6:.0f} MP (50 MP refused: needs ~{refused[0]:.0f} MiB)")
        report.checks.append(Check(
            f"m.{label}", f"thumbnail peak RSS, {what} {label.replace('_', ' ')} ({mode})",
            f"{peak:.0f} MiB ({path.stat().st_size / MIB:.0f} MiB file, "
            f"{per_pixel:.1f} B/px; fits {MEMORY_LIMIT_MIB:.0f} MiB up to "
            f"{fits / 1e6:.0f} MP)",
            peak, "<=", MEMORY_LIMIT_MIB, "MiB"))
        path.unlink()
    # hash: a sparse object (reads as zeros; the store streams it like any other)
    hash_peaks: dict[str, float] = {}
    for label, size in (("photo", 0), ("100MiB", 100 * MIB), (f"{big_mib}MiB", big_mib * MIB)):
        if size:
            target = scene.bucket / f"big-{label}.bin"
            with target.open("wb") as handle:
                handle.truncate(size)
            key = target.name
        else:
            target = scene.bucket / scene.photo_key
            key = scene.photo_key
        clear_xattrs(target)
        try:
            run = harness.run(folders["hash"], {**scene.bound, "bucket": SRC, "key": key,
                                                "sizes": SIZES},
                              clients=CLIENTS["hash"], clients_first=True)
        finally:
            if size:
                target.unlink()
        assert run.result["digest_source"] == "computed", run.result
        hash_peaks[label] = run.peak_mib
        report.memory[f"hash_{label}"] = {
            "bytes": run.result["input_bytes"], "peak_mib": run.peak_mib,
            "call_ms": run.times["call"],
            "mib_per_s": run.result["input_bytes"] / MIB / (run.times["call"] / 1000),
        }
    big, small = hash_peaks[f"{big_mib}MiB"], hash_peaks["100MiB"]
    report.checks += [
        Check("m.hash", f"hash peak RSS, {big_mib} MiB object",
              f"{big:.1f} MiB (100 MiB: {small:.1f}, a photo: {hash_peaks['photo']:.1f}; "
              f"{report.memory[f'hash_{big_mib}MiB']['mib_per_s']:.0f} MiB/s)",
              big, "<", HASH_LIMIT_MIB, "MiB"),
        Check("m.hash-growth", f"hash peak growth 100 MiB -> {big_mib} MiB",
              f"{big - small:+.1f} MiB", big - small, "<=", HASH_GROWTH_MIB, "MiB"),
    ]


# -- w: warm invokes through owdedup serve -----------------------------------------------------


class Rest:
    """A JSON client for the server's REST API. Invokes open a new connection each (as the
    ``wsk`` CLI does) unless *keep_alive*; see ``NOOP`` for why that matters."""

    def __init__(self, port: int, auth: str) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/json",
                        "Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=180)

    def call(self, method: str, path: str, body: Any = None, *,
             keep_alive: bool = True) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        if not keep_alive:
            self.conn.close()
            self.conn = self._connect()
        for attempt in (0, 1):
            try:
                self.conn.request(method, f"/api/v1/namespaces/_/{path}", body=data,
                                  headers=self.headers)
                response = self.conn.getresponse()
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = self._connect()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def put(self, path: str, body: Any) -> Any:
        status, reply = self.call("PUT", f"{path}?overwrite=true", body)
        if status != 200:
            raise RuntimeError(f"PUT {path}: {status} {reply}")
        return reply

    def invoke(self, name: str, payload: Mapping[str, Any], *,
               keep_alive: bool = False) -> dict[str, Any]:
        status, reply = self.call(
            "POST", f"actions/owdedup/{name}?blocking=true&result=true", dict(payload),
            keep_alive=keep_alive)
        if status != 200 or not isinstance(reply, dict) or "error" in reply:
            raise RuntimeError(f"invoke {name}: {status} {reply}")
        return reply

    def close(self) -> None:
        self.conn.close()


@contextmanager
def serve(work: Path, runtime_site: Path) -> Iterator[Rest]:
    """``owdedup serve`` as a subprocess on a free port with a generated key."""
    alphabet = string.ascii_letters + string.digits
    auth = f"{uuid.uuid4()}:{''.join(secrets.choice(alphabet) for _ in range(64))}"
    port = free_port()
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "owdedup", "serve", "--port", str(port), "--auth", auth,
         "--runtime-site", str(runtime_site)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=work,
    )
    rest = Rest(port, auth)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("owdedup serve did not start: "
                                       + (work / "serve.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield rest
    finally:
        rest.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


#: A no-op action: what the server and the launcher cost per invoke, whatever the action.
#: Over one kept-alive connection it shows ~40 ms more than over a new one: the server writes
#: the response headers and body in two sends without TCP_NODELAY, so Nagle holds the body
#: back until the client's delayed ACK of the headers (Linux: 40 ms).
NOOP = "def main(params):\n    return {\"ok\": True}\n"


@dataclass
class WarmConfig:
    name: str  # "lookup/hit"
    action: str
    payload: dict[str, Any]
    before: Callable[[], None]
    expect: Callable[[dict[str, Any]], bool]
    keep_alive: bool = False


def bench_warm(report: Report, zips: Mapping[str, Path], runtime_site: Path, root: Path,
               photo: Path, invokes: int, warmup: int, console: Console) -> None:
    bucket = root / "store" / SRC
    bucket.mkdir(parents=True)
    shutil.copyfile(photo, bucket / photo.name)
    stored = bucket / photo.name
    records_url = f"sqlite://{root / 'records.sqlite'}"
    bound = {"store": (root / "store").as_uri(), "records": records_url, "dest_bucket": DEST}
    job = {"bucket": SRC, "key": photo.name, "sizes": SIZES}
    records: RecordStore = open_records(records_url, {})
    with serve(root, runtime_site) as rest:
        rest.put("packages/owdedup",
                 {"parameters": [{"key": k, "value": v} for k, v in bound.items()]})
        for action in SEQUENCE:
            code = base64.b64encode(zips[action].read_bytes()).decode("ascii")
            rest.put(f"actions/owdedup/{action}", {
                "exec": {"kind": "python:3.11", "code": code, "binary": True, "main": "main"},
                "limits": {"timeout": 60_000, "memory": 256, "logs": 10},
            })
        rest.put("actions/owdedup/dedup-thumbnail", {"exec": {
            "kind": "sequence", "components": [f"/_/owdedup/{a}" for a in SEQUENCE]}})
        rest.put("actions/owdedup/noop", {"exec": {"kind": "python:3.11", "code": NOOP}})

        # one pass through the steps gives each step's hit and miss inputs
        hashed = rest.invoke("hash", job)
        digest = hashed["digest"]
        missed = rest.invoke("lookup", hashed)
        function_ids = [o["function_id"] for o in missed["outputs"]]
        if any(o["hit"] for o in missed["outputs"]):
            raise RuntimeError(f"fresh record store, yet a hit: {missed}")
        computed = rest.invoke("thumbnail", missed)
        rest.invoke("record", computed)
        found = [records.get(fid, digest) for fid in function_ids]
        kept: list[Record] = [r for r in found if r is not None]
        hit = rest.invoke("lookup", hashed)
        passed = rest.invoke("thumbnail", hit)

        def ensure_records() -> None:
            for record in kept:
                records.put(record)

        def drop_records() -> None:
            for fid in function_ids:
                records.delete(fid, digest)

        def new_content() -> None:
            drop_records()
            clear_xattrs(stored)

        def nothing() -> None:
            return

        def status(expected: str) -> Callable[[dict[str, Any]], bool]:
            return lambda r: r.get("status") == expected

        def hits(expected: bool) -> Callable[[dict[str, Any]], bool]:
            return lambda r: all(o["hit"] is expected for o in r["outputs"])

        configs = [
            WarmConfig("hash/hit", "hash", job, nothing,
                       lambda r: r["digest_source"] == "checksum"),
            WarmConfig("hash/miss", "hash", job, lambda: clear_xattrs(stored),
                       lambda r: r["digest_source"] == "computed"),
            WarmConfig("lookup/hit", "lookup", hashed, ensure_records, hits(True)),
            WarmConfig("lookup/miss", "lookup", hashed, drop_records, hits(False)),
            WarmConfig("thumbnail/hit", "thumbnail", passed, nothing, hits(True)),
            WarmConfig("thumbnail/miss", "thumbnail", missed, nothing,
                       lambda r: float(r.get("compute_ms") or 0) > 0),
            WarmConfig("record/hit", "record", passed, nothing, status("deduplicated")),
            WarmConfig("record/miss", "record", computed, drop_records, status("computed")),
            WarmConfig("sequence/hit", "dedup-thumbnail", job, ensure_records,
                       status("deduplicated")),
            WarmConfig("sequence/miss", "dedup-thumbnail", job, new_content, status("computed")),
            WarmConfig("noop/new-conn", "noop", {}, nothing, lambda r: r == {"ok": True}),
            WarmConfig("noop/keep-alive", "noop", {}, nothing, lambda r: r == {"ok": True},
                       keep_alive=True),
        ]
        for config in configs:
            for _ in range(warmup):
                config.before()
                rest.invoke(config.action, config.payload, keep_alive=config.keep_alive)
        times: dict[str, list[float]] = {c.name: [] for c in configs}
        for round_ in range(invokes):
            for config in configs:
                config.before()
                started = time.perf_counter()
                result = rest.invoke(config.action, config.payload,
                                     keep_alive=config.keep_alive)
                times[config.name].append((time.perf_counter() - started) * 1000)
                if not config.expect(result):
                    raise RuntimeError(f"{config.name}: unexpected result {result}")
            console.print(f"  round {round_ + 1}/{invokes}", end="\r", highlight=False)
    records.close()
    report.warm = times
    for name, ms in times.items():
        report.checks.append(Check(
            f"w.{name}", f"warm blocking invoke {name.replace('/', ' ')}",
            f"median {median(ms):.1f} ms, p95 {common.percentile(ms, 95):.1f} ms",
            median(ms), unit="ms"))


# -- s: sizes ----------------------------------------------------------------------------------


_ALIASES = {"_cffi_backend": "cffi", "pil": "pillow", "crypto": "pycryptodome",
            "argon2_cffi": "argon2", "_argon2_cffi_bindings": "argon2",
            "argon2_cffi_bindings": "argon2"}


def _group(name: str) -> str:
    prefix = SITE_PACKAGES + "/"
    if name.startswith(prefix):
        top = name[len(prefix):].split("/")[0]
        top = re.sub(r"-[^-]+\.dist-info$", "", top).removesuffix(".libs")
        top = top.split(".")[0] if top.endswith((".so", ".py")) else top
        top = top.lower() or "site-packages"
        return _ALIASES.get(top, top)
    return name.split("/")[0] if "/" in name else name


def bench_sizes(report: Report, zips: Mapping[str, Path]) -> None:
    for action, path in zips.items():
        size = path.stat().st_size
        groups: dict[str, int] = defaultdict(int)
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for entry in infos:
                groups[_group(entry.filename)] += entry.compress_size
        biggest = sorted(groups.items(), key=lambda kv: kv[1], reverse=True)[:6]
        report.sizes[action] = {
            "zip_bytes": size, "base64_bytes": request_bytes(size),
            "uncompressed_bytes": sum(i.file_size for i in infos), "files": len(infos),
            "biggest_compressed": dict(biggest),
        }
    largest = max(report.sizes.items(), key=lambda kv: kv[1]["zip_bytes"])
    name, info = largest
    report.checks += [
        Check("s.zip", f"largest zip ({name})", f"{info['zip_bytes'] / MIB:.2f} MiB",
              info["zip_bytes"] / MIB, "<", MAX_ZIP_BYTES / MIB, "MiB"),
        Check("s.base64", f"largest create request body ({name}, base64)",
              f"{info['base64_bytes'] / MIB:.2f} MiB",
              info["base64_bytes"] / MIB, "<", REQUEST_LIMIT_BYTES / MIB, "MiB"),
    ]


# -- output ------------------------------------------------------------------------------------


def print_tables(report: Report, console: Console) -> None:
    checks = Table(title="owdedup action benchmark")
    for column in ("", "measurement", "value", "target", "result"):
        checks.add_column(column)
    for check in report.checks:
        passed = check.passed
        verdict = "-" if passed is None else "[green]PASS[/]" if passed else "[red]FAIL[/]"
        target = "" if check.target is None else f"{check.op} {check.target:g} {check.unit}"
        checks.add_row(check.id, check.name, check.measured, target, verdict)
    console.print(checks)

    if report.cold:
        table = Table(title="cold start, medians in ms (cached bytecode | fresh unpack)")
        for column in ("action", "interpreter", "activate+import", "first call", "clients",
                       "cold+clients", "p95", "RSS MiB"):
            table.add_column(column, justify="left" if column == "action" else "right")
        for action in ACTIONS:
            c = cold_summary(report.cold["cached"][action])
            f = cold_summary(report.cold["fresh"][action])
            table.add_row(action, *(f"{c[k]:.0f} | {f[k]:.0f}" for k in (
                "interpreter", "activate_import", "call", "clients", "cold_clients",
                "cold_clients_p95", "rss_mib")))
        console.print(table)

    for action, rows in report.imports.items():
        totals = report.import_totals.get(action, {})
        spent = ", ".join(f"{k} {v:.0f}" for k, v in totals.items())
        table = Table(title=f"{action}: top imports by self time (-X importtime, ms; {spent})")
        for column in ("package", "ms", "mods", "phase", "via", "hit path"):
            table.add_column(column, justify="right" if column in ("ms", "mods") else "left")
        for row in rows:
            table.add_row(row["package"], f"{row['self_ms']:.1f}", str(row["modules"]),
                          row["phase"], row["via"], row["hit_path"])
        console.print(table)

    if report.sizes:
        table = Table(title="zip sizes")
        for column in ("action", "zip MiB", "base64 MiB", "unzipped MiB", "files",
                       "biggest parts (compressed MiB)"):
            table.add_column(column, justify="left" if column in ("action", "biggest parts "
                                                                  "(compressed MiB)") else "right")
        for action, info in report.sizes.items():
            parts = ", ".join(f"{k} {v / MIB:.1f}" for k, v in info["biggest_compressed"].items())
            table.add_row(action, f"{info['zip_bytes'] / MIB:.2f}",
                          f"{info['base64_bytes'] / MIB:.2f}",
                          f"{info['uncompressed_bytes'] / MIB:.1f}", str(info["files"]), parts)
        console.print(table)
    env = report.environment
    console.print(f"{env['cpu_count']} CPUs ({env['cpu_model']}), Python {env['python']} "
                  f"(actions: {env.get('base_python', '?')} -I -S), Pillow {env['pillow']}, "
                  f"load {env['load_average_start'][0]:.2f} -> "
                  f"{env.get('load_average_end', [float('nan')])[0]:.2f}", highlight=False)


def save_chart(report: Report, path: Path) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    ax = axes[0][0]
    if report.cold:
        labels: list[str] = []
        segments: dict[str, list[float]] = {"activate+import": [], "first call": [],
                                            "clients": []}
        targets: list[float] = []
        for action in ACTIONS:
            for variant in ("cached", "fresh"):
                s = cold_summary(report.cold[variant][action])
                labels.append(f"{action} ({'cached' if variant == 'cached' else 'fresh'})")
                segments["activate+import"].append(s["activate_import"])
                segments["first call"].append(s["call"])
                segments["clients"].append(s["clients"])
                targets.append(TARGET_MS.get(action, float("nan")))
        left = [0.0] * len(labels)
        for (name, values), color in zip(segments.items(), ("steelblue", "darkorange", "gray"),
                                         strict=True):
            ax.barh(labels, values, left=left, label=name, color=color)
            left = [a + b for a, b in zip(left, values, strict=True)]
        for i, target in enumerate(targets):
            if target == target:  # not NaN
                ax.plot([target, target], [i - 0.4, i + 0.4], color="black", linestyle="--")
        ax.invert_yaxis()
        ax.set_xlabel("ms (medians; dashed: target)")
        ax.set_title("cold start: import + first call + client imports")
        ax.legend(fontsize=8)
    ax = axes[0][1]
    if report.memory:
        names = list(report.memory)
        peaks = [max(v["peak_mib"]) if isinstance(v["peak_mib"], list) else v["peak_mib"]
                 for v in report.memory.values()]
        limits = [HASH_LIMIT_MIB if n.startswith("hash") else MEMORY_LIMIT_MIB for n in names]
        colors = ["seagreen" if p <= lim else "firebrick"
                  for p, lim in zip(peaks, limits, strict=True)]
        bars = ax.barh(names, peaks, color=colors)
        ax.bar_label(bars, fmt="%.0f", fontsize=8, padding=2)
        ax.axvline(MEMORY_LIMIT_MIB, color="black", linestyle="--", linewidth=1)
        ax.axvline(HASH_LIMIT_MIB, color="gray", linestyle=":", linewidth=1)
        ax.invert_yaxis()
        ax.set_xlabel("peak RSS MiB (dashed 256: thumbnail limit, dotted 64: hash)")
        ax.set_title("peak memory")
    ax = axes[1][0]
    if report.warm:
        names = list(report.warm)
        medians = [median(v) for v in report.warm.values()]
        p95 = [common.percentile(v, 95) - median(v) for v in report.warm.values()]
        colors = ["seagreen" if n.endswith("hit") else "darkorange" if n.endswith("miss")
                  else "gray" for n in names]
        bars = ax.barh(names, medians, xerr=[[0] * len(names), p95], color=colors)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=8)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("ms, log scale (bar: median, whisker: p95)")
        ax.set_title("warm blocking invoke through owdedup serve")
    ax = axes[1][1]
    if report.sizes:
        names = list(report.sizes)
        zipped = [v["zip_bytes"] / MIB for v in report.sizes.values()]
        encoded = [v["base64_bytes"] / MIB for v in report.sizes.values()]
        y = range(len(names))
        ax.barh([i - 0.2 for i in y], zipped, height=0.4, label="zip")
        ax.barh([i + 0.2 for i in y], encoded, height=0.4, label="base64")
        ax.set_yticks(list(y), names)
        ax.axvline(MAX_ZIP_BYTES / MIB, color="black", linestyle="--", linewidth=1)
        ax.invert_yaxis()
        ax.set_xlabel("MiB (dashed: 48 MiB code limit)")
        ax.set_title("zip sizes")
        ax.legend(fontsize=8)
    env = report.environment
    common.save_figure(fig, f"owdedup action zips ({env['cpu_count']} CPUs, Python "
                       f"{env['python']}, Pillow {env['pillow']}, commit {env['git_commit']})",
                       path)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    # --photos (the median-sized one is used) and --out
    parser = common.argument_parser((__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--zips", type=Path,
                        help="use these built zips (default: build them into a temp folder)")
    parser.add_argument("--runtime-site", type=Path,
                        help="a folder of the runtime's packages (default: the python:3.11 "
                             "image's, prepared once in the cache, as owdedup serve does)")
    parser.add_argument("--runs", type=int, default=15,
                        help="fresh processes per action, bytecode cached (c)")
    parser.add_argument("--fresh-runs", type=int, default=10,
                        help="fresh processes per action in a fresh unpack (cf)")
    parser.add_argument("--mem-runs", type=int, default=2, help="runs per memory case (max)")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the big hash object")
    parser.add_argument("--invokes", type=int, default=30, help="warm invokes per config")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured invokes per config")
    common.add_only(parser, SECTIONS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser.parse_args(argv)


def pick_photo(folder: Path) -> Path:
    photos = sorted(common.jpeg_photos(folder), key=lambda p: (p.stat().st_size, p.name))
    if not photos:
        sys.exit(f"no JPEG photos in {folder}")
    return photos[len(photos) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sections = common.parse_sections(args.only, SECTIONS)
    console = Console(width=None if sys.stdout.isatty() else 180)
    python = base_python()
    photo = pick_photo(args.photos)
    # common.environment adds photo_bytes (and photos: 1) for the one photo
    report = Report(common.environment([photo], {"pillow": PIL.__version__},
                                       {"base_python": python, "photo": photo.name}))
    work = Path(tempfile.mkdtemp(prefix="owdedup-bench-actions-"))
    try:
        if args.zips:
            zips = {a: (args.zips / f"{a}.zip").resolve() for a in ACTIONS}
        else:
            console.print("building the zips ...")
            built = build_actions(MANIFEST, work / "zips", log=lambda _: None)
            zips = {item.name: item.path for item in built}
        report.environment["zip_sha256"] = {
            a: hashlib.sha256(p.read_bytes()).hexdigest() for a, p in zips.items()}
        if args.runtime_site is None:
            console.print("runtime site: the python:3.11 image's packages (cached) ...")
        site = (args.runtime_site.resolve() if args.runtime_site is not None
                else prepare_runtime_site(python=python, log=console.print))
        harness = Harness(python, site, work)
        folders = {a: unpack(zips[a], work / "actions" / a) for a in ACTIONS}
        if sections & {"cold", "imports", "memory"}:
            scene = make_scene(work / "scene", photo)
            with stub_api() as api_url:
                prepare_scene(scene, harness, folders, api_url)
                if "cold" in sections:
                    console.print(f"[bold]c, cf[/]: cold starts ({args.runs} cached + "
                                  f"{args.fresh_runs} fresh per action) ...")
                    bench_cold(report, harness, zips, scene, folders, args.runs,
                               args.fresh_runs, console)
                if "imports" in sections:
                    console.print("[bold]i[/]: -X importtime ...")
                    bench_imports(report, harness, scene, folders)
            if "memory" in sections:
                console.print("[bold]m[/]: peak memory ...")
                bench_memory(report, harness, scene, folders, photo, args.mem_runs,
                             args.big_mib, console)
        if "warm" in sections:
            console.print(f"[bold]w[/]: warm invokes through owdedup serve "
                          f"({args.invokes} per config) ...")
            bench_warm(report, zips, site, work / "warm", photo, args.invokes, args.warmup,
                       console)
        if "sizes" in sections:
            bench_sizes(report, zips)
    finally:
        if args.keep:
            console.print(f"kept {work}", highlight=False)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.environment["load_average_end"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    save_chart(report, args.out / "chart.png")
    print_tables(report, console)
    console.print(f"raw numbers: {args.out / 'results.json'}, chart: {args.out / 'chart.png'}",
                  highlight=False)
    return 0 if all(c.passed is not False for c in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
