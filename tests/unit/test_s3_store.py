"""The S3 backend's pure parts: URL and options, checksum encoding, error mapping, redaction.

No network: the store is built (the minio client connects lazily) but never called.
"""

from __future__ import annotations

import base64
import hashlib
import traceback
from pathlib import Path
from typing import Any, cast

import pytest
import urllib3
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from owdedup.runtime.errors import ConfigError, NotFoundError, StoreError
from owdedup.runtime.registry import scrub
from owdedup.runtime.stores import open_store
from owdedup.runtime.stores.s3 import (
    Endpoint,
    S3Options,
    S3Store,
    checksum_from_headers,
    checksum_to_sha256_hex,
    parse_endpoint,
    sha256_hex_to_checksum,
    translate_error,
)

SECRET = "s3cr3t-VALUE-never-shown"
ACCESS = "owdedup-AKIA1234"
STORE = "s3 http://127.0.0.1:9000"


# -- URL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "netloc", "secure", "shown"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1:9000", False, "s3 http://127.0.0.1:9000"),
        ("http://127.0.0.1:9000/", "127.0.0.1:9000", False, "s3 http://127.0.0.1:9000"),
        ("https://s3.example.com", "s3.example.com", True, "s3 https://s3.example.com"),
        ("s3://minio.local:9443", "minio.local:9443", True, "s3 https://minio.local:9443"),
        ("HTTP://Host:80", "host:80", False, "s3 http://host:80"),
        ("http://[::1]:9000", "[::1]:9000", False, "s3 http://[::1]:9000"),
    ],
)
def test_endpoint_from_url(url: str, netloc: str, secure: bool, shown: str) -> None:
    assert parse_endpoint(url) == Endpoint(netloc, secure)
    store = open_store(url, {"access_key": ACCESS, "secret_key": SECRET})
    assert isinstance(store, S3Store)
    assert store.describe() == shown
    assert SECRET not in repr(store) and ACCESS not in repr(store)
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/bucket",
        "http://127.0.0.1:9000?x=1",
        "http://:9000",
        "http://127.0.0.1:notaport",
        "ftp://127.0.0.1",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoint(url)


def test_credentials_in_the_url_are_refused_and_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(f"http://{ACCESS}:{SECRET}@127.0.0.1:9000", {})
    assert SECRET not in str(caught.value) and ACCESS not in str(caught.value)
    assert "***@127.0.0.1:9000" in str(caught.value)


# -- options ---------------------------------------------------------------------------------


def test_options(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    opts = S3Options.parse({
        "access_key": ACCESS, "secret_key": SECRET, "session_token": "tok-123456",
        "region": "eu-west-1", "cert_check": "false", "ca_bundle": str(bundle),
        "unrelated": "ignored",
    })
    assert (opts.access_key, opts.secret_key, opts.session_token) == (ACCESS, SECRET, "tok-123456")
    assert opts.region == "eu-west-1" and opts.cert_check is False and opts.ca_bundle == bundle
    assert SECRET not in repr(opts) and ACCESS not in repr(opts)
    assert set(opts.secrets()) == {SECRET, ACCESS, "tok-123456"}
    assert S3Options.parse({}) == S3Options()
    assert S3Options.parse({"cert_check": "TRUE"}).cert_check is True


@pytest.mark.parametrize(
    "options",
    [
        {"access_key": ACCESS},
        {"secret_key": SECRET},
        {"cert_check": "maybe"},
        {"ca_bundle": "/nonexistent/ca.pem"},
    ],
)
def test_bad_options_are_config_errors(options: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        S3Options.parse(options)
    assert SECRET not in str(caught.value)


# -- checksums -------------------------------------------------------------------------------


def test_checksum_round_trip() -> None:
    digest = hashlib.sha256(b"hello").hexdigest()
    value = sha256_hex_to_checksum(digest)
    assert value == base64.b64encode(hashlib.sha256(b"hello").digest()).decode()
    assert value == "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
    assert checksum_to_sha256_hex(value) == digest
    assert checksum_to_sha256_hex(value, "FULL_OBJECT") == digest


@pytest.mark.parametrize(
    ("value", "checksum_type"),
    [
        ("ahKB0mh9QU4hlLE8GsZ6Fl/J64eoqzHUiQZgqujoXbI=-2", "COMPOSITE"),  # multipart, as MinIO
        ("ahKB0mh9QU4hlLE8GsZ6Fl/J64eoqzHUiQZgqujoXbI=-2", None),
        ("ahKB0mh9QU4hlLE8GsZ6Fl/J64eoqzHUiQZgqujoXbI=", "COMPOSITE"),
        ("AAAA", None),  # not 32 bytes
        ("not base64!", None),
        ("", None),
        (None, None),
    ],
)
def test_composite_or_malformed_checksums_are_ignored(
    value: str | None, checksum_type: str | None
) -> None:
    assert checksum_to_sha256_hex(value, checksum_type) is None


def test_checksum_from_headers_is_case_insensitive() -> None:
    value = sha256_hex_to_checksum("ab" * 32)
    assert checksum_from_headers({"X-Amz-Checksum-Sha256": value}) == "ab" * 32
    headers = {"x-amz-checksum-sha256": value, "X-Amz-Checksum-Type": "FULL_OBJECT"}
    assert checksum_from_headers(headers) == "ab" * 32
    assert checksum_from_headers({"X-Amz-Checksum-Sha256": value + "-3"}) is None
    assert checksum_from_headers({"ETag": '"abc"'}) is None


@pytest.mark.parametrize("bad", ["", "ABCD" * 16, "ab" * 31, "zz" * 32])
def test_bad_hex_digest_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        sha256_hex_to_checksum(bad)


# -- names -----------------------------------------------------------------------------------


@pytest.fixture
def store() -> S3Store:
    return S3Store(Endpoint("127.0.0.1:9", secure=False), S3Options(ACCESS, SECRET))


@pytest.mark.parametrize("bucket", ["", "a", "a/b", "bad..name", "192.168.1.1", "x" * 64])
def test_bad_bucket_names_are_config_errors(store: S3Store, bucket: str) -> None:
    with pytest.raises(ConfigError):
        store.head(bucket, "k")
    with pytest.raises(ConfigError):
        store.put(bucket, "k", b"x")


@pytest.mark.parametrize("key", ["", "a/../b", "./a", "a/.", "x" * 1025, "a\x00b"])
def test_bad_keys_are_config_errors(store: S3Store, key: str) -> None:
    with pytest.raises(ConfigError):
        store.head("photos", key)
    with pytest.raises(ConfigError):
        store.delete("photos", key)


# -- errors ----------------------------------------------------------------------------------


def s3_error(code: str, message: str = "msg", **names: Any) -> S3Error:
    return S3Error(
        cast(Any, None), code, message, "/b/k", "REQ1", "HOST1",
        bucket_name=names.get("bucket"), object_name=names.get("key"),
    )


def test_not_found_wording_matches_the_folder_store() -> None:
    err = translate_error(s3_error("NoSuchKey"), store=STORE, bucket="photos", key="a.jpg")
    assert isinstance(err, NotFoundError) and str(err) == "object photos/a.jpg does not exist"
    err = translate_error(s3_error("NoSuchBucket"), store=STORE, bucket="nope", key="a.jpg")
    assert isinstance(err, NotFoundError)
    assert str(err) == f"bucket 'nope' does not exist in {STORE}"
    err = translate_error(s3_error("NoSuchBucket"), store=STORE, bucket="nope")
    assert str(err) == f"bucket 'nope' does not exist in {STORE}"


@pytest.mark.parametrize(
    "code", ["InvalidBucketName", "XMinioInvalidObjectName", "KeyTooLongError"]
)
def test_bad_names_from_the_server_are_config_errors(code: str) -> None:
    err = translate_error(s3_error(code), store=STORE, bucket="b", key="k")
    assert isinstance(err, ConfigError) and code in str(err)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (s3_error("InternalError", "We encountered an internal error"), "InternalError"),
        (s3_error("AccessDenied", "Access denied"), "check the store credentials"),
        (s3_error("SignatureDoesNotMatch"), "SignatureDoesNotMatch"),
        (s3_error("XAmzContentChecksumMismatch"), "does not match its SHA-256"),
        (ServerError("server failed with HTTP status code 503", 503), "HTTP 503"),
        (InvalidResponseError(502, "text/html", "<html>bad gateway</html>"), "HTTP 502"),
    ],
)
def test_server_failures_are_store_errors_naming_the_endpoint(
    exc: MinioException, expected: str
) -> None:
    err = translate_error(exc, store=STORE, bucket="b", key="k", secrets=(SECRET,))
    assert type(err) is StoreError
    assert STORE in str(err) and expected in str(err)


def test_connection_errors_give_the_os_reason() -> None:
    pool = urllib3.HTTPConnectionPool("127.0.0.1", 9)
    cause = ConnectionRefusedError(111, "Connection refused")
    conn_error = NewConnectionError(cast(Any, None), "Failed to establish a new connection")
    conn_error.__cause__ = cause
    exc = MaxRetryError(pool, f"/b/k?X-Amz-Signature={SECRET}", conn_error)
    err = translate_error(exc, store=STORE, bucket="b", key="k", secrets=(SECRET,))
    assert type(err) is StoreError
    assert str(err) == f"cannot reach {STORE} (b/k): Connection refused"
    broken = ProtocolError("Connection broken", TimeoutError("timed out"))
    assert "cannot reach" in str(translate_error(broken, store=STORE))


def test_secrets_never_reach_the_message() -> None:
    exc = s3_error("InternalError", f"server echoed {SECRET} and {ACCESS}")
    err = translate_error(exc, store=STORE, bucket="b", key="k", secrets=(SECRET, ACCESS))
    assert SECRET not in str(err) and ACCESS not in str(err)
    assert "***" in str(err)
    text = "".join(traceback.format_exception(err))
    assert SECRET not in text


def test_scrub() -> None:
    assert scrub(f"a {SECRET} b {SECRET}", (SECRET,)) == "a *** b ***"
    assert scrub("abc", ("",)) == "abc"
    assert scrub("key=ab", ("ab",)) == "key=ab"  # too short to be a credential worth hiding


class NoClient:
    """Stands in for the minio client: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the S3 client was used: {name}")


def test_remember_sha256_is_a_no_op(store: S3Store) -> None:
    from owdedup.runtime.stores.base import ObjectInfo

    store._client = cast(Any, NoClient())
    store.remember_sha256(ObjectInfo("photos", "a.jpg", 1), "ab" * 32)  # no request is sent


class BuggyClient:
    """A client whose every call hits a programming error (not a store failure)."""

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise TypeError(f"bug in {name}")

        return call


def test_bugs_are_not_turned_into_store_errors(store: S3Store) -> None:
    store._client = cast(Any, BuggyClient())
    with pytest.raises(TypeError, match="bug in stat_object"):
        store.head("photos", "a.jpg")
    with pytest.raises(TypeError, match="bug in put_object"):
        store.put("photos", "a.jpg", b"x")
    with pytest.raises(TypeError, match="bug in remove_object"):
        store.delete("photos", "a.jpg")
    with pytest.raises(TypeError, match="bug in list_objects"):
        list(store.list("photos"))


def test_minio_is_imported_only_by_the_s3_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys, owdedup.runtime.stores as s; s.open_store('file:///tmp');"
        "print('minio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class CountingClient:
    """Answers bucket_exists/make_bucket and counts the calls."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.calls: list[str] = []

    def bucket_exists(self, bucket: str) -> bool:
        self.calls.append(f"exists {bucket}")
        return bucket in self.existing

    def make_bucket(self, bucket: str) -> None:
        self.calls.append(f"make {bucket}")
        self.existing.add(bucket)


def test_ensure_bucket_asks_the_server_once_per_bucket(store: S3Store) -> None:
    client = CountingClient({"photos"})
    store._client = cast(Any, client)
    for _ in range(3):
        store.ensure_bucket("photos")
        store.ensure_bucket("thumbs")
    assert client.calls == ["exists photos", "exists thumbs", "make thumbs"]
    store.bucket_exists("photos")  # an explicit question is still asked
    assert client.calls[-1] == "exists photos"
