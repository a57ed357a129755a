"""A wrapped action on the real services (issue 10): the conductor's zip, run by ``owdedup
serve`` as the runtime runs it, hashes objects in MinIO (the checksum HEAD when the store
holds one) and keeps its records in the CouchDB-API server; no credential in a record."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.runtime.records import open_records
from owdedup.runtime.stores import open_store
from owdedup.serve.server import DevServer, ServeConfig
from tests.serve.conftest import AUTH, Client
from tests.serve.test_wrap_command import wrap

CODE = "def main(params):\n    return {'key': params['key'], 'n': len(params)}\n"


@pytest.fixture
def server(runtime_site: Path) -> Iterator[DevServer]:
    running = DevServer(ServeConfig(auth=AUTH, port=0, runtime_site=runtime_site))
    running.start()
    yield running
    running.close()


def test_a_wrapped_action_on_minio_and_couchdb(
    server: DevServer, services_env: dict[str, str], tmp_path: Path,
) -> None:
    client = Client(server.url)
    store = open_store(services_env["OWDEDUP_STORE"], {
        "access_key": services_env["OWDEDUP_STORE_ACCESS_KEY"],
        "secret_key": services_env["OWDEDUP_STORE_SECRET_KEY"]})
    bucket = services_env["OWDEDUP_IN_BUCKET"]
    tag = uuid.uuid4().hex[:8]
    data = f"content {tag}".encode()
    store.ensure_bucket(bucket)
    store.put(bucket, f"{tag}/a.bin", data, sha256=hashlib.sha256(data).hexdigest())
    store.put(bucket, f"{tag}/b.bin", data)  # no checksum: hashed by streaming
    records_url = f"{services_env['OWDEDUP_RECORDS'].rstrip('/')}/wrapped-{tag}"
    env = {**services_env, "OWDEDUP_RECORDS": records_url, "OW_APIHOST": server.url,
           "OW_AUTH": AUTH, "OW_NAMESPACE": "_", "WSK_CONFIG_FILE": str(tmp_path / "none")}
    client.action("myfunction", CODE)
    code, output = wrap(env, "myfunction")
    assert code == 0, output

    def invoke(key: str) -> dict[str, Any]:
        reply = client.invoke("myfunction-dedup", {"bucket": bucket, "key": key}, result=True)
        assert reply.status == 200, reply.raw
        return dict(reply.json)

    first = invoke(f"{tag}/a.bin")
    assert first["key"] == f"{tag}/a.bin" and first["owdedup"]["hit"] is False
    second = invoke(f"{tag}/b.bin")
    assert second["owdedup"]["hit"] is True and second["key"] == f"{tag}/a.bin"
    records = open_records(records_url, {"username": services_env["OWDEDUP_RECORDS_USERNAME"],
                                         "password": services_env["OWDEDUP_RECORDS_PASSWORD"]})
    try:
        _, rows = records._request(  # type: ignore[attr-defined]
            "scan", "POST", records.path("_all_docs"),  # type: ignore[attr-defined]
            json={"include_docs": True})
        text = json.dumps(rows)
        assert '"result"' in text
        for name in ("OWDEDUP_STORE_SECRET_KEY", "OWDEDUP_RECORDS_PASSWORD"):
            assert services_env[name] not in text
        records._request("drop", "DELETE", records.path(), expect=(404,))  # type: ignore[attr-defined]
    finally:
        records.close()
