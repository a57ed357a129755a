"""The S3 backend against a real MinIO (the one ``owdedup services up`` runs).

Every test works in buckets of its own (``s3test-<random>``) and removes them afterwards.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from owdedup.engine.executor import Engine
from owdedup.runtime.digest import CHUNK_BYTES, sha256_stream
from owdedup.runtime.errors import ConfigError, NotFoundError, StoreError
from owdedup.runtime.stores import open_store
from owdedup.runtime.stores.s3 import S3Store
from owdedup.services import ServiceError, ServicesConfig, minio
from owdedup.services.install import install_mc
from tests.conftest import PROJECT
from tests.imagegen import jpeg
from tests.object_store_contract import ObjectStoreContract
from tests.service_fixtures import Services
from tests.tooling import missing


def _options(env: dict[str, str]) -> dict[str, str]:
    return {
        "access_key": env["OWDEDUP_STORE_ACCESS_KEY"],
        "secret_key": env["OWDEDUP_STORE_SECRET_KEY"],
    }


@pytest.fixture
def store(services_env: dict[str, str]) -> Iterator[S3Store]:
    s = open_store(services_env["OWDEDUP_STORE"], _options(services_env))
    assert isinstance(s, S3Store)
    yield s
    s.close()


@pytest.fixture
def buckets(store: S3Store) -> Iterator[list[str]]:
    """Two fresh buckets (in, out), emptied and removed after the test."""
    names = [f"s3test-{uuid.uuid4().hex[:10]}-{role}" for role in ("in", "out")]
    for name in names:
        store.ensure_bucket(name)
    yield names
    for name in names:
        if store.bucket_exists(name):
            for info in list(store.list(name)):
                store.delete(name, info.key)
            store._client.remove_bucket(name)


class TestMinioContract(ObjectStoreContract):
    @pytest.fixture
    def object_store(self, store: S3Store) -> S3Store:
        return store


@pytest.fixture(scope="module")
def mc_config(services: Services, tmp_path_factory: pytest.TempPathFactory) -> ServicesConfig:
    """A services configuration for ``owdedup.services.minio.mc``: the project's pinned mc
    (built with Go on first use) against this session's MinIO, alias ``config.mc_alias``."""
    if services.config is not None:
        config = services.config  # the local MinIO: its credentials file is in its state
    else:  # Docker: the same install, a state of its own holding the run's credentials
        store = urlsplit(services.env["OWDEDUP_STORE"])
        assert store.hostname is not None and store.port is not None, store
        config = dataclasses.replace(
            ServicesConfig.from_env(), state=tmp_path_factory.mktemp("mc-state"),
            host=store.hostname, minio_port=store.port)
        config.credentials_file.write_text(json.dumps({
            "access_key": services.env["OWDEDUP_STORE_ACCESS_KEY"],
            "secret_key": services.env["OWDEDUP_STORE_SECRET_KEY"]}))
        config.credentials_file.chmod(0o600)
    try:
        install_mc(config)  # nothing to do when the pinned version is there
    except ServiceError:
        if shutil.which("go") is None:
            missing("the pinned mc is not built, and building it needs Go (not on PATH)")
        raise
    return config


def _mc(config: ServicesConfig, *args: str) -> None:
    """``mc --quiet ARGS`` with the pinned mc, ``config.mc_alias`` naming this MinIO."""
    minio.mc(config, "--quiet", *args, timeout=300)


def _mc_path(config: ServicesConfig, bucket: str, key: str) -> str:
    return f"{config.mc_alias}/{bucket}/{key}"


def test_put_head_read_list_copy_delete(store: S3Store, buckets: list[str]) -> None:
    src, dst = buckets
    digest = hashlib.sha256(b"hello").hexdigest()
    put = store.put(src, "a/b.jpg", b"hello", content_type="image/jpeg")
    assert put.size == 5 and put.sha256 == digest
    store.put(src, "c.jpg", b"world!")
    store.put(src, "a/z/deep.jpg", b"")
    info = store.head(src, "a/b.jpg")
    assert (info.size, info.sha256, info.content_type) == (5, digest, "image/jpeg")
    assert store.read_bytes(src, "c.jpg") == b"world!"
    assert store.read_bytes(src, "a/z/deep.jpg") == b""
    listed = list(store.list(src))
    assert [(i.key, i.size) for i in listed] == [("a/b.jpg", 5), ("a/z/deep.jpg", 0), ("c.jpg", 6)]
    assert [i.key for i in store.list(src, "a/")] == ["a/b.jpg", "a/z/deep.jpg"]
    assert list(store.list(src, "nothing/")) == []

    copied = store.copy(src, "a/b.jpg", dst, "copy/b.jpg")
    assert copied.sha256 == digest and copied.size == 5
    assert store.read_bytes(dst, "copy/b.jpg") == b"hello"
    head = store.head(dst, "copy/b.jpg")
    assert head.sha256 == digest and head.content_type == "image/jpeg"

    store.delete(src, "c.jpg")
    store.delete(src, "c.jpg")  # deleting a missing object is not an error
    assert not store.exists(src, "c.jpg") and store.exists(src, "a/b.jpg")
    store.ensure_bucket(src)  # an existing bucket is fine
    assert store.bucket_exists(src) and not store.bucket_exists(f"{src}-nope")


def test_checksum_fast_path_only_for_objects_uploaded_with_one(
    store: S3Store, buckets: list[str], mc_config: ServicesConfig, tmp_path: Path
) -> None:
    src, _ = buckets
    data = os.urandom(10_000)
    digest = hashlib.sha256(data).hexdigest()
    file = tmp_path / "plain.bin"
    file.write_bytes(data)
    _mc(mc_config, "cp", str(file), _mc_path(mc_config, src, "by-mc.bin"))
    assert store.head(src, "by-mc.bin").sha256 is None  # no checksum: hash must read it
    store.put(src, "by-store.bin", data)
    assert store.head(src, "by-store.bin").sha256 == digest
    store.put(src, "given.bin", data, sha256=digest)
    assert store.head(src, "given.bin").sha256 == digest
    # a copy gets a SHA-256 computed by the server, even from an object that had none
    assert store.copy(src, "by-mc.bin", src, "copy-of-mc.bin").sha256 == digest
    assert store.head(src, "copy-of-mc.bin").sha256 == digest


def test_multipart_upload_has_a_composite_checksum_that_is_ignored(
    store: S3Store, buckets: list[str], mc_config: ServicesConfig, tmp_path: Path
) -> None:
    src, _ = buckets
    file = tmp_path / "big.bin"
    file.write_bytes(os.urandom(20 * 1024 * 1024))  # mc uploads this in parts
    _mc(mc_config, "cp", "--checksum", "SHA256", str(file), _mc_path(mc_config, src, "big.bin"))
    raw = store._client.stat_object(
        src, "big.bin", extra_headers={"x-amz-checksum-mode": "ENABLED"}
    )
    assert raw.metadata is not None and "-" in raw.metadata["x-amz-checksum-sha256"]
    assert store.head(src, "big.bin").sha256 is None


def test_wrong_sha256_is_refused_by_the_server(store: S3Store, buckets: list[str]) -> None:
    src, _ = buckets
    with pytest.raises(StoreError, match="does not match its SHA-256"):
        store.put(src, "k", b"data", sha256="00" * 32)
    assert not store.exists(src, "k")


def test_missing_objects_and_buckets(store: S3Store, buckets: list[str]) -> None:
    src, dst = buckets
    gone = f"{src}-missing"
    where = store.describe()
    with pytest.raises(NotFoundError, match=rf"^object {src}/nope\.jpg does not exist$"):
        store.head(src, "nope.jpg")
    with pytest.raises(NotFoundError, match=rf"^object {src}/nope\.jpg does not exist$"):
        store.open(src, "nope.jpg")
    for call in (
        lambda: store.head(gone, "a.jpg"),
        lambda: store.open(gone, "a.jpg"),
        lambda: store.put(gone, "a.jpg", b"x"),
        lambda: list(store.list(gone)),
    ):
        with pytest.raises(NotFoundError) as caught:
            call()
        assert str(caught.value) == f"bucket '{gone}' does not exist in {where}"
    store.put(src, "a.jpg", b"x")
    with pytest.raises(NotFoundError, match=f"bucket '{gone}' does not exist"):
        store.copy(src, "a.jpg", gone, "a.jpg")
    with pytest.raises(NotFoundError, match=rf"object {src}/b\.jpg does not exist"):
        store.copy(src, "b.jpg", dst, "b.jpg")
    store.delete(gone, "a.jpg")  # like the folder store: nothing to delete is not an error
    with pytest.raises(ConfigError):
        store.head("Bad_Bucket!", "a.jpg")
    with pytest.raises(ConfigError):
        store.ensure_bucket("Upper-Case")


def test_large_object_streams_in_bounded_chunks(store: S3Store, buckets: list[str]) -> None:
    src, _ = buckets
    data = os.urandom(5 * 1024 * 1024 + 123)
    store.put(src, "big.bin", data)
    with store.open(src, "big.bin") as stream:
        first = stream.read(CHUNK_BYTES)
        assert len(first) == CHUNK_BYTES
        _, size = sha256_stream(stream)
    assert size == len(data) - CHUNK_BYTES
    with store.open(src, "big.bin") as stream:
        assert sha256_stream(stream) == (hashlib.sha256(data).hexdigest(), len(data))
    assert store.read_bytes(src, "big.bin") == data


def test_read_prefix_is_a_ranged_get(store: S3Store, buckets: list[str]) -> None:
    src, _ = buckets
    data = os.urandom(3 * 1024 * 1024)
    store.put(src, "big.bin", data)
    store.put(src, "empty.bin", b"")
    sent: list[int] = []
    urlopen = store._http.urlopen

    def counting(*args: object, **kwargs: object) -> object:
        response = urlopen(*args, **kwargs)  # type: ignore[arg-type]
        sent.append(int(response.headers.get("Content-Length", 0)))
        return response

    store._http.urlopen = counting  # type: ignore[method-assign,assignment]
    try:
        assert store.read_prefix(src, "big.bin", 4096) == data[:4096]
        assert sent == [4096]  # the server sent the range, not the object
    finally:
        store._http.urlopen = urlopen  # type: ignore[method-assign]
    assert store.read_prefix(src, "big.bin", len(data) + 10) == data
    assert store.read_prefix(src, "empty.bin", 4096) == b""
    assert store.read_bytes(src, "big.bin", max_bytes=len(data)) == data
    with pytest.raises(StoreError, match="more than"):
        store.read_bytes(src, "big.bin", max_bytes=len(data) - 1)
    with pytest.raises(NotFoundError):
        store.read_prefix(src, "missing.bin", 4096)


def test_gzip_encoded_object_is_read_as_stored(store: S3Store, buckets: list[str]) -> None:
    src, _ = buckets
    body = gzip.compress(b"x" * 1000)
    store._client.put_object(
        src, "z.gz", io.BytesIO(body), len(body),
        metadata={"Content-Encoding": "gzip"},
    )
    assert store.read_bytes(src, "z.gz") == body


def test_bad_credentials_and_dead_endpoint_never_show_the_secret(
    services_env: dict[str, str], buckets: list[str]
) -> None:
    wrong_secret = "wrong-" + uuid.uuid4().hex
    bad = open_store(services_env["OWDEDUP_STORE"], {
        "access_key": services_env["OWDEDUP_STORE_ACCESS_KEY"], "secret_key": wrong_secret,
    })
    with pytest.raises(StoreError) as caught:
        bad.head(buckets[0], "a.jpg")
    text = "".join(traceback.format_exception(caught.value))
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert wrong_secret not in text and services_env["OWDEDUP_STORE_SECRET_KEY"] not in text

    # A port nothing listens on (bound, then released at once): no server is to start there,
    # so tests.tooling.listen_ports is not needed.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = open_store(f"http://127.0.0.1:{port}", _options(services_env))
    with pytest.raises(StoreError, match=rf"cannot reach s3 http://127\.0\.0\.1:{port}"):
        dead.head("bucket", "a.jpg")


def _local_engine(services_env: dict[str, str], out: str, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch, *, with_keys: bool) -> Engine:
    """The local executor on MinIO with a fresh SQLite record store; the store's settings in
    the process environment, the keys in the actions' own settings only *with_keys*."""
    from owdedup.engine.local import local_executor

    names = ("OWDEDUP_STORE", "OWDEDUP_STORE_ACCESS_KEY", "OWDEDUP_STORE_SECRET_KEY")
    for name in names:
        monkeypatch.setenv(name, services_env[name])
    env = {name: services_env[name] for name in (names if with_keys else names[:1])}
    env |= {"OWDEDUP_RECORDS": f"sqlite:///{tmp_path}/r.sqlite", "OWDEDUP_OUT_BUCKET": out}
    return local_executor(PROJECT / "manifest.yaml", env)


def test_pipeline_on_minio(
    services_env: dict[str, str], store: S3Store, buckets: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, out = buckets
    image = jpeg(320, 240)
    store.put(src, "a.jpg", image, content_type="image/jpeg")
    engine = _local_engine(services_env, out, tmp_path, monkeypatch, with_keys=True)
    payload = {"bucket": src, "key": "a.jpg", "sizes": [64]}

    first = engine.invoke("owdedup/dedup-thumbnail", payload)
    assert first.success, first.result
    assert first.result["status"] == "computed"
    assert first.result["digest"] == hashlib.sha256(image).hexdigest()
    assert first.result["digest_source"] == "checksum"
    output = first.result["outputs"][0]
    assert output["bucket"] == out and store.exists(out, output["key"])
    assert store.head(out, output["key"]).sha256 is not None  # outputs carry checksums too

    second = engine.invoke("owdedup/dedup-thumbnail", payload)
    assert second.success, second.result
    assert second.result["status"] == "deduplicated"
    assert second.result["digest_source"] == "checksum"
    assert second.result["outputs"][0]["key"] == output["key"]
    for activation in (first, second):
        assert services_env["OWDEDUP_STORE_SECRET_KEY"] not in str(activation.result)


def test_pipeline_computes_the_digest_without_a_checksum(
    services_env: dict[str, str], store: S3Store, buckets: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, mc_config: ServicesConfig,
) -> None:
    src, out = buckets
    file = tmp_path / "a.jpg"
    file.write_bytes(jpeg(320, 240))
    _mc(mc_config, "cp", str(file), _mc_path(mc_config, src, "a.jpg"))
    engine = _local_engine(services_env, out, tmp_path, monkeypatch, with_keys=False)
    result = engine.invoke("owdedup/dedup-thumbnail", {"bucket": src, "key": "a.jpg",
                                                       "sizes": [64]})
    assert result.success, result.result
    assert result.result["status"] == "computed"
    assert result.result["digest_source"] == "computed"
