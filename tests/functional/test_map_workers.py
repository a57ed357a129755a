"""``map``'s worker processes: they keep the memory a decode frees for the next object (see
``owdedup.allocator``), unless told not to, and refuse a setting they cannot read.

Measured from inside a real worker: a copy of the bundled manifest whose ``hash`` action
first allocates, fills and frees a 64 MiB buffer twice (as libjpeg does with a progressive
JPEG's coefficients), then writes the page faults of the second round to a marker file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.functional.test_cli import Cli, by_status, photos
from tests.imagegen import jpeg
from tests.tooling import copy_of_the_project

pytestmark = pytest.mark.functional

_BUFFER_MIB = 64
_PAGES = (_BUFFER_MIB << 20) // 4096

PROBING_HASH = f'''
import json, os, resource
from pathlib import Path
from owdedup.runtime.action import make_main
from owdedup.runtime.pipeline import hash_step

real = make_main(hash_step)


def _round():
    buffer = bytearray({_BUFFER_MIB} << 20)  # malloc, then every page written (zeroed)
    del buffer


def main(params):
    _round()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    _round()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    Path(os.environ["PROBES"], params["key"]).write_text(json.dumps(faults))
    return real(params)
'''


@pytest.fixture
def probing_manifest(tmp_path: Path) -> Path:
    return copy_of_the_project(tmp_path / "probing", {"hash.py": PROBING_HASH})


def _faults(cli: Cli, store_root: Path, manifest: Path, probes: Path,
            **env: str) -> list[int]:
    probes.mkdir()
    cli.env.update({"PROBES": str(probes), **env})
    code, rows = cli.map("--workers", "2", "--manifest", str(manifest))
    assert code == 0 and by_status(rows) == {"computed": 3}, rows
    return [json.loads(p.read_text()) for p in sorted(probes.iterdir())]


def test_a_worker_reuses_the_memory_a_large_buffer_freed(
    cli: Cli, store_root: Path, probing_manifest: Path, tmp_path: Path
) -> None:
    photos(store_root, 3)
    faults = _faults(cli, store_root, probing_manifest, tmp_path / "probes")
    assert len(faults) == 3
    # The second buffer lands on the pages the first one left: (almost) nothing to fault.
    assert max(faults) < _PAGES // 20, faults


def test_keep_heap_0_leaves_the_c_library_defaults(
    cli: Cli, store_root: Path, probing_manifest: Path, tmp_path: Path
) -> None:
    photos(store_root, 3)
    faults = _faults(cli, store_root, probing_manifest, tmp_path / "probes",
                     OWDEDUP_KEEP_HEAP_MB="0")
    # glibc maps a block this large afresh each time: every page faults again.
    assert min(faults) > _PAGES // 2, faults


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
