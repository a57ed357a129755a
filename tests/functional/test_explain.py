"""``owdedup explain`` (issue 11, item 3): on a hit, a fresh miss, a miss caused by each part
of the identity (a parameter, the function's code, a library's version), a known bad input,
and work in flight; and the command's text and JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from owdedup.explain import explain
from owdedup.runtime import functions, identity
from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.errors import BadInputError
from owdedup.runtime.functions import FunctionRegistry
from owdedup.runtime.job import Job
from owdedup.runtime.pipeline import compute_step, hash_step, lookup_step, record_step
from tests.functional.test_cli import Cli
from tests.imagegen import jpeg, not_an_image

BUILTINS = {"thumbnail": "owdedup.runtime.functions.thumbnail:ThumbnailFunction"}


@pytest.fixture
def ctx(settings: Settings) -> Any:
    context = Context(settings)
    yield context
    context.close()


def run(ctx: Context, key: str, function: str = "thumbnail", **params: Any) -> Job:
    job = Job("photos", key, dest_bucket="thumbs", function=function, params=params)
    for step in (hash_step, lookup_step, compute_step, record_step):
        job = step(job, ctx)
    return job


def test_a_hit(ctx: Context, store_root: Path) -> None:
    (store_root / "photos" / "a.jpg").write_bytes(jpeg(120, 80))
    run(ctx, "a.jpg", sizes=[64])
    explained = explain(ctx, "photos", "a.jpg", "thumbnail", {"sizes": [64]})
    assert explained["verdict"] == "hit" and explained["other_identities"] == []
    (variant,) = explained["variants"]
    assert variant["record"] == "found"
    parts = variant["parts"]
    assert parts["function"] == "thumbnail" and len(parts["code"]) == 64
    assert set(parts["libraries"]) == set(functions.get_function("thumbnail").libraries)
    assert parts["params"] == {"chain": [64], "format": "jpeg", "quality": 85}
    assert explained["digest_source"] in ("computed", "checksum", "cache")


def test_a_fresh_miss(ctx: Context, store_root: Path) -> None:
    (store_root / "photos" / "new.jpg").write_bytes(jpeg(121, 80))
    explained = explain(ctx, "photos", "new.jpg", "thumbnail", {"sizes": [64]})
    assert explained["verdict"] == "miss" and explained["other_identities"] == []
    assert explained["variants"][0]["record"] == "none"
    assert explained["lease"] is None


def test_a_miss_caused_by_a_parameter(ctx: Context, store_root: Path) -> None:
    (store_root / "photos" / "q.jpg").write_bytes(jpeg(122, 80))
    run(ctx, "q.jpg", sizes=[64], quality=85)
    explained = explain(ctx, "photos", "q.jpg", "thumbnail", {"sizes": [64], "quality": 90})
    assert explained["verdict"] == "miss"
    (other,) = explained["other_identities"]
    assert other["differs"] == ["quality 85 → 90"]


def test_a_miss_caused_by_a_library_version(
    ctx: Context, store_root: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (store_root / "photos" / "l.jpg").write_bytes(jpeg(123, 80))
    run(ctx, "l.jpg", sizes=[64])
    (library,) = functions.get_function("thumbnail").libraries
    installed = identity.library_version(library)
    monkeypatch.setattr(identity, "library_version", lambda name: "99.0")  # an upgrade
    explained = explain(ctx, "photos", "l.jpg", "thumbnail", {"sizes": [64]})
    assert explained["verdict"] == "miss"
    (other,) = explained["other_identities"]
    assert other["differs"] == [f"{library} {installed} → 99.0"]


def test_a_miss_caused_by_the_code(
    ctx: Context, store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = FunctionRegistry(BUILTINS, environ={})
    registry.register("counted", "tests.unit.test_inflight_pipeline:Counted")
    monkeypatch.setattr(functions, "registry", registry)
    monkeypatch.setenv("INFLIGHT_TEST_LOG", str(tmp_path / "log"))
    (store_root / "photos" / "t.txt").write_bytes(b"some text")
    run(ctx, "t.txt", function="counted")
    changed = FunctionRegistry(BUILTINS, environ={})
    changed.register("counted", "tests.unit.test_negative_records:CountedNextVersion")
    monkeypatch.setattr(functions, "registry", changed)
    explained = explain(ctx, "photos", "t.txt", "counted", {})
    (other,) = explained["other_identities"]
    assert len(other["differs"]) == 1 and other["differs"][0].startswith("code of counted changed")


def test_a_known_bad_input_and_work_in_flight(ctx: Context, store_root: Path) -> None:
    (store_root / "photos" / "bad.jpg").write_bytes(not_an_image())
    with pytest.raises(BadInputError):
        run(ctx, "bad.jpg", sizes=[64])
    explained = explain(ctx, "photos", "bad.jpg", "thumbnail", {"sizes": [64]})
    assert explained["verdict"] == "refused"
    assert "not an image" in explained["variants"][0]["refusal"]
    (store_root / "photos" / "busy.jpg").write_bytes(jpeg(124, 80))
    before = explain(ctx, "photos", "busy.jpg", "thumbnail", {"sizes": [64]})
    fid = before["variants"][0]["identity"]
    ctx.records.claim(fid, before["digest"], "activation-42", time.time() + 30)
    explained = explain(ctx, "photos", "busy.jpg", "thumbnail", {"sizes": [64]})
    assert explained["verdict"] == "waits for work in flight"
    assert explained["lease"]["owner"] == "activation-42"


def test_the_command_prints_text_and_json(cli: Cli, store_root: Path) -> None:
    (store_root / "photos" / "c.jpg").write_bytes(jpeg(125, 80))
    assert cli("invoke", "thumbnail", "photos/c.jpg", "thumbs", "--size", "64").returncode == 0
    text = cli("explain", "photos/c.jpg", "--size", "64", "--quality", "90")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("photos/c.jpg: miss")
    assert "quality 85 → 90" in text.stdout
    data = json.loads(cli("explain", "photos/c.jpg", "--size", "64", "--json").stdout)
    assert data["verdict"] == "hit" and data["variants"][0]["record"] == "found"
    missing = cli("explain", "photos/none.jpg")
    assert missing.returncode != 0 and "none.jpg" in missing.stderr + missing.stdout
