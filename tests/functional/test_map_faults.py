"""``owdedup map`` under faults: a worker that dies, a coordinator killed with SIGKILL, a
record store that cannot write. Real processes; the faults come from a copy of the bundled
manifest whose ``hash`` action misbehaves for chosen keys."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from owdedup.mapper import MapRequest, run_map
from owdedup.runtime.functions import get_function, sequence_of
from owdedup.runtime.records import open_records
from tests.functional.test_cli import Cli, by_status, photos
from tests.imagegen import jpeg
from tests.tooling import copy_of_the_project, wait_until

pytestmark = pytest.mark.functional

# Wraps the real hash action: "die*" keys kill their worker process, "block*" keys write a
# marker naming the worker's pid and then wait forever.
FAULTY_HASH = '''
import os, signal, time
from pathlib import Path
from owdedup.runtime.action import make_main
from owdedup.runtime.pipeline import hash_step

real = make_main(hash_step)


def main(params):
    key = params["key"]
    if key.startswith("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    if key.startswith("block"):
        Path(os.environ["MARKERS"], str(os.getpid())).write_text(key)
        time.sleep(600)
    return real(params)
'''


@pytest.fixture
def faulty_manifest(tmp_path: Path) -> Path:
    return copy_of_the_project(tmp_path / "faulty", {"hash.py": FAULTY_HASH})


def test_a_dead_worker_fails_only_its_object_and_the_run_finishes(
    cli: Cli, store_root: Path, faulty_manifest: Path
) -> None:
    photos(store_root, 4)
    (store_root / "photos" / "die.jpg").write_bytes(jpeg(120, 90))
    code, rows = cli.map("--workers", "2", "--manifest", str(faulty_manifest))
    assert code == 1
    by_key = {r["key"]: r for r in rows}
    assert by_status(rows) == {"computed": 4, "failed": 1}
    assert by_key["die.jpg"]["error"] == (
        "die.jpg: the worker process was killed by SIGKILL (out of memory?) while processing it")
    assert by_key["die.jpg"]["outputs"] == []


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> set[int]:
    children, found, todo = _children(), set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _pids_in(markers: Path, count: int) -> set[int] | None:
    pids = {int(p.name) for p in markers.iterdir()}
    return pids if len(pids) == count else None


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its new parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_coordinator_killed_by_sigkill(
    cli: Cli, store_root: Path, faulty_manifest: Path, tmp_path: Path
) -> None:
    for name in ("block1.jpg", "block2.jpg"):
        (store_root / "photos" / name).write_bytes(jpeg(120, 90))
    markers = tmp_path / "markers"
    markers.mkdir()
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "owdedup", "map", "thumbnail", "photos", "thumbs", "-q",
         "--workers", "2", "--manifest", str(faulty_manifest)],
        cwd=cli.cwd, env={**cli.env, "MARKERS": str(markers)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        workers = wait_until(lambda: _pids_in(markers, 2), timeout=120,
                             what="both workers to hold an object")
        # and any helper (a fork server, multiprocessing's resource tracker)
        left_behind = _descendants(coordinator.pid) | workers
        assert workers <= left_behind
    finally:
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
    wait_until(lambda: not any(_running(pid) for pid in left_behind), timeout=60,
               what=f"processes {sorted(left_behind)} to end with their coordinator")


def test_a_record_store_that_cannot_write_is_reported(
    cli: Cli, store_root: Path, settings: Any
) -> None:
    photos(store_root, 3)
    open_records(settings.records_url).stats()  # creates the database
    with sqlite3.connect(settings.records_url.removeprefix("sqlite://")) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON records "
                   "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    proc = cli("map", "thumbnail", "photos", "thumbs", "-q", "--results", "r.jsonl")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    rows = [json.loads(line) for line in (cli.cwd / "r.jsonl").read_text().splitlines()]
    assert by_status(rows) == {"computed": 3}
    assert all("database or disk is full" in r["record_error"] for r in rows)
    output = " ".join((proc.stdout + proc.stderr).split())
    assert "records not written │ 3" in output
    assert "database or disk is full" in output


def test_with_other_threads_running_workers_come_from_the_fork_server(
    env: dict[str, str], store_root: Path, faulty_manifest: Path
) -> None:
    """A fork would copy locks another thread holds: then the workers (and the replacement
    of a dead one) come from a fork server, and behave the same."""
    from multiprocessing import forkserver

    photos(store_root, 2)
    (store_root / "photos" / "die.jpg").write_bytes(jpeg(120, 90))
    spec = get_function("thumbnail")
    params = spec.normalise({"sizes": "32"}).to_dict()
    request = MapRequest(function="thumbnail", sequence=f"owdedup/{sequence_of(spec.name)}",
                         hash_action="owdedup/hash", src_bucket="photos", dest_bucket="thumbs",
                         params=params, manifest=faulty_manifest, env={**os.environ, **env})
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        summary = run_map(request, ["die.jpg", "p0.jpg", "p1.jpg"], workers=2)
    finally:
        stop.set()
        other.join()
    assert [r.status for r in summary.results] == ["failed", "computed", "computed"]
    assert "killed by SIGKILL" in (summary.results[0].error or "")
    assert forkserver._forkserver._forkserver_pid is not None  # type: ignore[attr-defined]
