"""The services benchmark runs end to end against the real services on tiny inputs (its
numbers are not judged here: see tests/benchmarks/bench_run.py)."""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tests.benchmarks.bench_run import assert_complete, make_photos, run_benchmark
from tests.service_fixtures import Services


def test_services_benchmark_measures_every_section(services: Services, tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos", count=4)
    run = run_benchmark(
        "bench_services.py",
        ["--photos", str(photos), "--rounds", "1", "--hit-repeats", "1", "--map-repeats", "1",
         "--small", "20", "--large", "200", "--lookups", "5"],
        tmp_path / "out", env=services.env,
    )
    assert_complete(run, [
        "1a", "1b", "1c", "1d", "1e", "1f",  # hit and miss paths, the hit path's parts
        "2a1", "2a2", "2a4", "2b1", "2b2", "2b4",  # map cold and warm, 1/2/4 workers
        "3a", "3b",  # record lookups, small and large database
    ])
    # Everything the run made on the services (named bench-*) is gone again.
    buckets = _buckets(services.env)
    assert services.env["OWDEDUP_IN_BUCKET"] in buckets  # the listing works, and was spared
    assert not [name for name in buckets if name.startswith("bench-")]
    assert not [name for name in _databases(services.env) if name.startswith("bench-")]


def _buckets(env: dict[str, str]) -> list[str]:
    from minio import Minio

    endpoint = urlsplit(env["OWDEDUP_STORE"])
    client = Minio(endpoint.netloc, access_key=env["OWDEDUP_STORE_ACCESS_KEY"],
                   secret_key=env["OWDEDUP_STORE_SECRET_KEY"], secure=endpoint.scheme == "https")
    return [bucket.name for bucket in client.list_buckets()]


def _databases(env: dict[str, str]) -> list[str]:
    request = urllib.request.Request(env["OWDEDUP_RECORDS"].rstrip("/") + "/_all_dbs")
    if password := env.get("OWDEDUP_RECORDS_PASSWORD"):
        user = env.get("OWDEDUP_RECORDS_USERNAME", "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as reply:
        names: list[str] = json.load(reply)
    return names
