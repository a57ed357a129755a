"""Each action through the local executor, as OpenWhisk would call it."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owdedup.engine.executor import Engine
from owdedup.engine.local import local_executor
from owdedup.runtime import handover
from owdedup.runtime.digest import CHUNK_BYTES, sha256_stream
from owdedup.runtime.records import open_records
from owdedup.runtime.stores.folder import FolderStore
from tests.conftest import PROJECT
from tests.imagegen import jpeg, not_an_image

SEQUENCE = "owdedup/dedup-thumbnail"


@pytest.fixture
def engine(env: dict[str, str]) -> Engine:
    return local_executor(PROJECT / "manifest.yaml", env)


@pytest.fixture
def photo(store_root: Path) -> bytes:
    data = jpeg(320, 240)
    (store_root / "photos" / "a.jpg").write_bytes(data)
    return data


def job(**extra: Any) -> dict[str, Any]:
    return {"bucket": "photos", "key": "a.jpg", "sizes": [64, 32], **extra}


def test_hash_names_content_by_sha256(engine: Engine, photo: bytes) -> None:
    result = engine.invoke("owdedup/hash", job()).result
    assert result["digest"] == hashlib.sha256(photo).hexdigest()
    assert result["input_bytes"] == len(photo)
    assert result["sizes"] == [64, 32]  # parameters normalised for the next steps


def test_hash_streams_in_bounded_chunks() -> None:
    class Reader(io.RawIOBase):
        def __init__(self, total: int) -> None:
            self.left, self.largest = total, 0

        def read(self, size: int = -1) -> bytes:
            assert size > 0, "the whole body was asked for at once"
            self.largest = max(self.largest, size)
            n = min(size, self.left)
            self.left -= n
            return b"x" * n

    reader = Reader(5 * CHUNK_BYTES + 7)
    digest, size = sha256_stream(reader)  # type: ignore[arg-type]
    assert size == 5 * CHUNK_BYTES + 7
    assert digest == hashlib.sha256(b"x" * size).hexdigest()
    assert reader.largest == CHUNK_BYTES


def test_hash_uses_the_stored_checksum_without_reading(
    engine: Engine, store_root: Path, context: Any
) -> None:
    data = jpeg(100, 80)
    digest = hashlib.sha256(data).hexdigest()
    context.store.put("photos", "b.jpg", data, sha256=digest)
    if context.store.head("photos", "b.jpg").sha256 is None:
        pytest.skip("filesystem without user extended attributes")
    result = engine.invoke("owdedup/hash", job(key="b.jpg")).result
    assert result["digest_source"] == "checksum" and result["digest"] == digest


@pytest.mark.parametrize(
    ("bucket", "key", "message"),
    [("photos", "missing.jpg", "missing.jpg: object photos/missing.jpg does not exist"),
     ("nobucket", "a.jpg", "bucket 'nobucket' does not exist"),
     ("photos", "../x", "invalid object key")],
)
def test_hash_errors_name_the_object(
    engine: Engine, photo: bytes, bucket: str, key: str, message: str
) -> None:
    activation = engine.invoke(SEQUENCE, job(bucket=bucket, key=key))
    assert not activation.success
    assert message in activation.result["error"]
    assert activation.result["key"] == key
    assert len(activation.components) == 1  # the sequence stopped at hash


def test_sequence_miss_then_hit(engine: Engine, photo: bytes, context: Any) -> None:
    first = engine.invoke(SEQUENCE, job()).result
    assert first["status"] == "computed" and first["recorded"] is True
    assert [o["size"] for o in first["outputs"]] == [64, 32]
    for output in first["outputs"]:
        assert context.store.exists(output["bucket"], output["key"])
        assert output["key"].endswith(f"/{first['digest']}.jpg")
    second = engine.invoke(SEQUENCE, job()).result
    assert second["status"] == "deduplicated"
    assert [o["key"] for o in second["outputs"]] == [o["key"] for o in first["outputs"]]
    assert all(o["hit"] for o in second["outputs"])


def test_same_bytes_under_another_name_reuse_the_output(
    engine: Engine, photo: bytes, store_root: Path
) -> None:
    (store_root / "photos" / "copy.jpg").write_bytes(photo)
    first = engine.invoke(SEQUENCE, job()).result
    again = engine.invoke(SEQUENCE, job(key="copy.jpg")).result
    assert again["status"] == "deduplicated"
    assert again["outputs"][0]["key"] == first["outputs"][0]["key"]


def test_materialize_copies_under_the_input_name(
    engine: Engine, photo: bytes, context: Any
) -> None:
    result = engine.invoke(SEQUENCE, job(materialize=True)).result
    assert [c["key"] for c in result["copies"]] == ["a_64.jpg", "a_32.jpg"]
    canonical = context.store.read_bytes("thumbs", result["outputs"][0]["key"])
    assert context.store.read_bytes("thumbs", "a_64.jpg") == canonical


def test_concurrent_writer_of_the_same_record_is_not_an_error(
    engine: Engine, photo: bytes, settings: Any
) -> None:
    looked_up = engine.invoke("owdedup/lookup", engine.invoke("owdedup/hash", job()).result)
    computed = engine.invoke("owdedup/thumbnail", looked_up.result)
    # Another activation records the same content first.
    assert engine.invoke("owdedup/record", computed.result).result["status"] == "computed"
    again = engine.invoke("owdedup/record", computed.result)
    assert again.success and again.result["status"] == "computed"
    records = open_records(settings.records_url)
    assert sum(s.records for s in records.stats()) == 2  # one per size, not duplicated


def test_hit_path_never_imports_the_image_decoder(
    env: dict[str, str], photo: bytes, engine: Engine
) -> None:
    engine.invoke(SEQUENCE, job())  # fill the records
    script = (
        "import json, sys\n"
        "from owdedup.engine.local import local_executor\n"
        f"engine = local_executor(sys.argv[1], json.loads(sys.argv[2]))\n"
        f"result = engine.invoke({SEQUENCE!r}, json.loads(sys.argv[3])).result\n"
        "print(json.dumps([result['status'], 'PIL' in sys.modules,\n"
        "                  'owdedup.runtime.thumbnail' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(PROJECT / "manifest.yaml"), json.dumps(env),
         json.dumps(job())],
        capture_output=True, text=True, check=True, cwd=PROJECT,
    ).stdout
    assert json.loads(out) == ["deduplicated", False, False]


def test_vanished_output_is_detected_and_recomputed(
    engine: Engine, photo: bytes, context: Any
) -> None:
    first = engine.invoke(SEQUENCE, job()).result
    gone = first["outputs"][1]
    context.store.delete(gone["bucket"], gone["key"])
    again = engine.invoke(SEQUENCE, job()).result
    assert again["status"] == "computed"
    assert context.store.exists(gone["bucket"], gone["key"])
    assert engine.invoke(SEQUENCE, job()).result["status"] == "deduplicated"


def test_bad_input_leaves_no_output_and_no_record(
    engine: Engine, store_root: Path, settings: Any
) -> None:
    (store_root / "photos" / "notes.jpg").write_bytes(not_an_image())
    activation = engine.invoke(SEQUENCE, job(key="notes.jpg"))
    assert not activation.success
    assert activation.result["error"].startswith("notes.jpg: not an image")
    assert activation.result["error_kind"] == "bad-input"
    assert [c.name for c in activation.components][-1] == "owdedup/thumbnail"
    assert list((store_root / "thumbs").rglob("*.jpg")) == []
    assert sum(s.records for s in open_records(settings.records_url).stats()) == 0


def test_memory_budget_reaches_the_thumbnail_step(
    engine: Engine, photo: bytes, store_root: Path
) -> None:
    activation = engine.invoke(SEQUENCE, job(max_memory_mb=1))
    assert not activation.success
    assert "memory budget" in activation.result["error"]
    assert activation.result["error"].startswith("a.jpg:")
    assert list((store_root / "thumbs").rglob("*.jpg")) == []
    assert engine.invoke(SEQUENCE, job()).result["status"] == "computed"


def test_object_replaced_after_hashing_is_not_recorded_under_the_old_digest(
    engine: Engine, photo: bytes, store_root: Path
) -> None:
    looked_up = engine.invoke("owdedup/lookup", engine.invoke("owdedup/hash", job()).result)
    (store_root / "photos" / "a.jpg").write_bytes(jpeg(50, 50))
    activation = engine.invoke("owdedup/thumbnail", looked_up.result)
    assert "replaced after it was hashed" in activation.result["error"]
    assert list((store_root / "thumbs").rglob("*.jpg")) == []


def test_record_store_failure_does_not_fail_the_work(
    env: dict[str, str], photo: bytes, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    broken = local_executor(PROJECT / "manifest.yaml",
                            {**env, "OWDEDUP_RECORDS": f"sqlite://{blocker}/records.sqlite"})
    activation = broken.invoke(SEQUENCE, job())
    assert activation.success
    assert activation.result["status"] == "computed" and activation.result["recorded"] is False
    assert any("record store unavailable" in line for line in activation.components[1].logs)


def test_credentials_never_appear_in_results_or_logs(engine: Engine, photo: bytes) -> None:
    secret = "s3cr3t-value-123"
    activation = engine.invoke(SEQUENCE, job(store_secret_key=secret, records_password=secret))
    blob = json.dumps(activation.to_dict()) + json.dumps(
        [c.to_dict() for c in activation.components])
    assert activation.success and secret not in blob


@pytest.mark.parametrize(
    ("params", "message"),
    [({"sizes": "big"}, "bad size"), ({"format": "gif"}, "unsupported format"),
     ({"quality": 500}, "bad quality"), ({"bucket": ""}, "missing parameter 'bucket'")],
)
def test_bad_parameters_are_one_line_errors(
    engine: Engine, photo: bytes, params: dict[str, Any], message: str
) -> None:
    result = engine.invoke(SEQUENCE, job(**params)).result
    assert message in result["error"] and "\n" not in result["error"]


def test_settings_repr_shows_no_secret() -> None:
    from owdedup.runtime.config import Settings
    from owdedup.runtime.context import Context

    secret = "s3cr3t-VALUE-never-shown"
    settings = Settings.resolve(
        {"store": "file:///tmp/s", "store_secret_key": secret, "records_password": secret},
        {"OWDEDUP_STORE_ACCESS_KEY": secret},
    )
    assert dict(settings.store_options)["secret_key"] == secret  # still held, only not shown
    assert secret not in repr(settings)
    assert secret not in repr(Context(settings))


@pytest.fixture
def handed_over() -> Iterator[None]:
    """The hand-over on, as in a ``map`` worker; off again afterwards (as on OpenWhisk)."""
    handover.enable(1 << 20)
    yield
    handover.enable(0)


def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real = FolderStore.open

    def counting(self: FolderStore, bucket: str, key: str) -> Any:
        opened.append(f"{bucket}/{key}")
        return real(self, bucket, key)

    monkeypatch.setattr(FolderStore, "open", counting)
    return opened


def test_in_one_process_a_cold_object_is_read_once(
    engine: Engine, photo: bytes, handed_over: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = count_opens(monkeypatch)
    hashed = engine.invoke("owdedup/hash", job())
    activation = engine.resume(SEQUENCE, "owdedup/hash", hashed.result)
    assert activation.success and activation.result["status"] == "computed"
    assert [c.name for c in activation.components] == [
        "owdedup/lookup", "owdedup/thumbnail", "owdedup/record"]
    assert opened == ["photos/a.jpg"]  # hash read it; thumbnail took those bytes (header too)


def test_without_the_hand_over_thumbnail_reads_and_checks_the_bytes_itself(
    engine: Engine, photo: bytes, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = count_opens(monkeypatch)
    looked_up = engine.invoke("owdedup/lookup", engine.invoke("owdedup/hash", job()).result)
    assert engine.invoke("owdedup/thumbnail", looked_up.result).success
    assert opened == ["photos/a.jpg"] * 3  # hash; then thumbnail: the header, the body


def test_handed_over_bytes_serve_only_their_own_object_and_digest(context: Any) -> None:
    handover.enable(1 << 20)
    try:
        handover.keep(context.store, "photos", "a.jpg", "d1", b"bytes")
        assert handover.take(context.store, "photos", "b.jpg", "d1") is None
        handover.keep(context.store, "photos", "a.jpg", "d1", b"bytes")
        assert handover.take(context.store, "photos", "a.jpg", "d2") is None
        handover.keep(context.store, "photos", "a.jpg", "d1", b"bytes")
        assert handover.take(context.store, "photos", "a.jpg", "d1") == b"bytes"
        assert handover.take(context.store, "photos", "a.jpg", "d1") is None  # taken once
    finally:
        handover.enable(0)
    handover.keep(context.store, "photos", "a.jpg", "d1", b"bytes")  # off: nothing kept
    assert handover.take(context.store, "photos", "a.jpg", "d1") is None
