"""``map``'s worker processes: they keep the memory a decode frees for the next object (see
``owdedup.allocator``), unless told not to, and refuse a setting they cannot read; and they
get the objects largest first.

Measured from inside a real worker: a copy of the bundled manifest whose ``hash`` action
first allocates a 64 MiB buffer (as libjpeg does with a progressive JPEG's coefficients) and
asks glibc (``mallinfo2``) how much of the heap is in blocks mapped on their own, then frees
it and asks how much free memory the heap kept. Byte counts, not page faults: those depend
on the page size (transparent huge pages)."""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import pytest

from tests.functional.test_cli import Cli, by_status, photos
from tests.imagegen import jpeg
from tests.tooling import copy_of_the_project

pytestmark = pytest.mark.functional

_BUFFER = 64 << 20

PROBING_HASH = f'''
import ctypes, json, os
from pathlib import Path
from owdedup.runtime.action import make_main
from owdedup.runtime.pipeline import hash_step

real = make_main(hash_step)


class _Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


_mallinfo2 = ctypes.CDLL(None).mallinfo2
_mallinfo2.restype = _Info


def main(params):
    buffer = bytearray({_BUFFER})
    mapped = _mallinfo2().hblkhd  # bytes in blocks glibc mapped on their own
    del buffer
    kept = _mallinfo2().fordblks  # free bytes the heap keeps
    probe = {{"mapped": mapped, "kept": kept}}
    Path(os.environ["PROBES"], params["key"]).write_text(json.dumps(probe))
    return real(params)
'''


def _has_mallinfo2() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


needs_glibc = pytest.mark.skipif(not _has_mallinfo2(),
                                 reason="the workers' heap setting is glibc's (2.33+ to probe)")


@pytest.fixture
def probing_manifest(tmp_path: Path) -> Path:
    return copy_of_the_project(tmp_path / "probing", {"hash.py": PROBING_HASH})


def _probes(cli: Cli, manifest: Path, probes: Path, **env: str) -> list[dict[str, int]]:
    probes.mkdir()
    cli.env.update({"PROBES": str(probes), **env})
    code, rows = cli.map("--workers", "2", "--manifest", str(manifest))
    assert code == 0 and by_status(rows) == {"computed": 3}, rows
    return [json.loads(p.read_text()) for p in sorted(probes.iterdir())]


@needs_glibc
def test_a_worker_serves_a_large_buffer_from_its_heap_and_keeps_it_when_freed(
    cli: Cli, store_root: Path, probing_manifest: Path, tmp_path: Path
) -> None:
    photos(store_root, 3)
    probes = _probes(cli, probing_manifest, tmp_path / "probes")
    assert len(probes) == 3
    for probe in probes:
        assert probe["mapped"] < _BUFFER, probe  # not a mapping of its own...
        assert probe["kept"] >= _BUFFER, probe  # ...and still there for the next image


@needs_glibc
def test_keep_heap_0_leaves_the_c_library_defaults(
    cli: Cli, store_root: Path, probing_manifest: Path, tmp_path: Path
) -> None:
    photos(store_root, 3)
    probes = _probes(cli, probing_manifest, tmp_path / "probes", OWDEDUP_KEEP_HEAP_MB="0")
    # glibc maps a block this large on its own, and unmaps it when it is freed.
    assert all(probe["mapped"] >= _BUFFER for probe in probes), probes


def test_a_keep_heap_value_that_is_no_number_stops_the_run_naming_it(
    cli: Cli, store_root: Path
) -> None:
    photos(store_root, 2)
    cli.env["OWDEDUP_KEEP_HEAP_MB"] = "lots"
    proc = cli("map", "thumbnail", "photos", "thumbs")
    assert proc.returncode != 0
    assert "OWDEDUP_KEEP_HEAP_MB='lots': expected a whole number of MiB" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (store_root / "thumbs").exists() or not any((store_root / "thumbs").iterdir())


ORDER_LOGGING_HASH = '''
import os
from owdedup.runtime.action import make_main
from owdedup.runtime.pipeline import hash_step

real = make_main(hash_step)


def main(params):
    with open(os.environ["ORDER_LOG"], "a") as log:
        log.write(params["key"] + "\\n")
    return real(params)
'''


def test_objects_are_handed_out_largest_first_equal_sizes_in_key_order(
    cli: Cli, store_root: Path, tmp_path: Path
) -> None:
    """The last objects to run are the smallest, so no worker idles while another finishes a
    big one; of identical contents (equal sizes) the first key still computes."""
    made = {"a.jpg": jpeg(60, 40), "b.jpg": jpeg(400, 300), "c.jpg": jpeg(200, 150)}
    made["d.jpg"] = made["b.jpg"]  # a copy: the same size as b, after it in key order
    for key, data in made.items():
        (store_root / "photos" / key).write_bytes(data)
    manifest = copy_of_the_project(tmp_path / "ordering", {"hash.py": ORDER_LOGGING_HASH})
    cli.env["ORDER_LOG"] = str(tmp_path / "order.log")
    code, rows = cli.map("--workers", "1", "--manifest", str(manifest))
    assert code == 0
    assert (tmp_path / "order.log").read_text().split() == ["b.jpg", "d.jpg", "c.jpg", "a.jpg"]
    assert [(r["key"], r["status"]) for r in rows] == [  # reported in key order
        ("a.jpg", "computed"), ("b.jpg", "computed"), ("c.jpg", "computed"),
        ("d.jpg", "deduplicated")]


def test_watch_refuses_a_keep_heap_value_that_is_no_number_naming_it(cli: Cli) -> None:
    cli.env["OWDEDUP_KEEP_HEAP_MB"] = "lots"
    proc = cli("watch", "--brokers", "127.0.0.1:1", "--topic", "uploads")
    assert proc.returncode == 1
    assert "OWDEDUP_KEEP_HEAP_MB='lots': expected a whole number of MiB" in proc.stderr
    assert "Traceback" not in proc.stderr
