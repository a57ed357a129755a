"""S3-compatible backend (MinIO, AWS S3, ...) on the ``minio`` client library.

    http://127.0.0.1:9000        plain HTTP (a local MinIO)
    https://s3.example.com       TLS
    s3://host[:port]             TLS, same as https://

The URL names the endpoint only: no credentials, path or query. Options (``store_<name>``
parameters or ``OWDEDUP_STORE_<NAME>`` variables): ``access_key``, ``secret_key``,
``session_token``, ``region`` (skips the per-bucket GetBucketLocation call), ``cert_check``
(``false`` disables TLS verification) and ``ca_bundle`` (a PEM file of trusted CAs). No
credential is ever copied into a message, ``describe()`` or an exception text.

The digest fast path: ``put`` uploads in one PutObject with ``x-amz-checksum-sha256`` (base64
of the raw digest), so the server verifies the body against it and keeps it with the object;
``head`` asks for it with ``x-amz-checksum-mode: ENABLED`` and returns it as ``sha256`` only
when it is a full-object checksum (a multipart upload carries a composite ``<b64>-<parts>``
checksum of the parts, which is not the content's SHA-256). ``copy`` is a server-side
CopyObject that asks the server to compute a SHA-256 for the copy.

``remember_sha256`` stays the base class's no-op: an S3 checksum can only be set when the
object is written, and re-writing the object to add one would fire another ObjectCreated
notification (and so another activation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn, TypeAlias, cast
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import MAX_PART_SIZE, check_bucket_name, check_object_name
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError
from urllib3.response import BaseHTTPResponse

from owdedup.runtime.digest import is_sha256_hex
from owdedup.runtime.errors import ConfigError, NotFoundError, OwdedupError, StoreError
from owdedup.runtime.registry import redact_url, scrub
from owdedup.runtime.stores.base import ObjectInfo, ObjectStore, read_at_most

SCHEMES = ("http", "https", "s3")

CHECKSUM_HEADER = "x-amz-checksum-sha256"
CHECKSUM_TYPE_HEADER = "x-amz-checksum-type"
CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}

#: Connections: fail fast on a dead endpoint (an action has 60 s in all), retry 5xx a little.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
RETRIES = 3

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "ResourceNotFound"})
_BAD_NAME_CODES = frozenset({
    "InvalidBucketName", "XMinioInvalidObjectName", "KeyTooLongError", "XMinioInvalidBucketName",
})
_AUTH_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "XMinioInvalidCredentials",
})
_CHECKSUM_CODES = frozenset({"XAmzContentChecksumMismatch", "BadDigest", "InvalidDigest"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


# -- URL and options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where the S3 API answers: ``host[:port]`` as the minio client wants it, and TLS or not."""

    netloc: str
    secure: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.netloc}"


def parse_endpoint(url: str) -> Endpoint:
    """``http://host:port`` (plain), ``https://host`` or ``s3://host`` (TLS) -> Endpoint."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid object store URL {shown}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"S3 store URL must start with http://, https:// or s3://: {shown}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"credentials in the store URL are not accepted ({shown}): pass them as options "
            "(store_access_key/store_secret_key or OWDEDUP_STORE_ACCESS_KEY/_SECRET_KEY)"
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"S3 store URL has no host: {shown}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            f"S3 store URL must name the endpoint only (no path or query): {shown}"
        )
    if ":" in host:  # IPv6 literal: urlsplit dropped the brackets
        host = f"[{host}]"
    return Endpoint(host if port is None else f"{host}:{port}", secure=scheme != "http")


@dataclass(frozen=True)
class S3Options:
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    cert_check: bool = True
    ca_bundle: Path | None = None

    def __repr__(self) -> str:  # never show the credentials
        return (
            f"S3Options(access_key={'***' if self.access_key else None}, "
            f"region={self.region!r}, cert_check={self.cert_check}, "
            f"ca_bundle={self.ca_bundle!r})"
        )

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> S3Options:
        """Read the options this backend knows; others (for other backends) are ignored."""

        def get(name: str) -> str | None:
            value = (options.get(name) or "").strip()
            return value or None

        access_key, secret_key = get("access_key"), get("secret_key")
        if (access_key is None) != (secret_key is None):
            missing = "secret_key" if secret_key is None else "access_key"
            raise ConfigError(
                f"S3 store option {missing!r} is missing (access_key and secret_key go together)"
            )
        cert_check = True
        raw = get("cert_check")
        if raw is not None:
            if raw.lower() in _FALSE:
                cert_check = False
            elif raw.lower() not in _TRUE:
                raise ConfigError(
                    f"S3 store option 'cert_check' must be true or false, got {raw!r}"
                )
        ca_bundle = None
        raw = get("ca_bundle")
        if raw is not None:
            ca_bundle = Path(raw).expanduser()
            if not ca_bundle.is_file():
                raise ConfigError(f"S3 store option 'ca_bundle': no such file {raw!r}")
        return cls(
            access_key=access_key,
            secret_key=secret_key,
            session_token=get("session_token"),
            region=get("region"),
            cert_check=cert_check,
            ca_bundle=ca_bundle,
        )

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message."""
        return tuple(v for v in (self.secret_key, self.session_token, self.access_key) if v)


# -- checksums ---------------------------------------------------------------------------------


def sha256_hex_to_checksum(sha256: str) -> str:
    """Hex SHA-256 -> the value of ``x-amz-checksum-sha256`` (base64 of the raw digest)."""
    if not is_sha256_hex(sha256):
        raise ConfigError(f"not a lowercase hex SHA-256 digest: {sha256!r}")
    return base64.b64encode(bytes.fromhex(sha256)).decode("ascii")


def checksum_to_sha256_hex(value: str | None, checksum_type: str | None = None) -> str | None:
    """``x-amz-checksum-sha256`` -> hex SHA-256 of the content, or None when it is not one.

    A multipart upload's checksum is composite (the checksum of the parts' checksums, written
    ``<base64>-<parts>`` and typed ``COMPOSITE``): it does not name the content, so it is ignored.
    """
    if not value:
        return None
    if checksum_type is not None and checksum_type.strip().upper() != "FULL_OBJECT":
        return None
    value = value.strip()
    if "-" in value:  # "-N" suffix; the standard base64 alphabet has no '-'
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def checksum_from_headers(headers: Mapping[str, str]) -> str | None:
    """The content's hex SHA-256 from response headers (HEAD, PUT or COPY), if it has one."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return checksum_to_sha256_hex(lowered.get(CHECKSUM_HEADER), lowered.get(CHECKSUM_TYPE_HEADER))


# -- errors ------------------------------------------------------------------------------------


def _transport_reason(exc: BaseException) -> str:
    """A short cause for a connection-level failure, without the request it belonged to."""
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    cause: BaseException | None = exc
    for _ in range(8):  # the OS error (refused, unreachable, TLS) sits down the cause chain
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, urllib3.exceptions.ResponseError):
        return str(exc)  # "too many 500 error responses"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "timed out"
    return type(exc).__name__


#: What the client and its HTTP layer raise, and all that ``translate_error`` translates.
#: Anything else (AttributeError, TypeError, ...) is a bug and propagates as it is.
ClientError: TypeAlias = MinioException | Urllib3Error | OSError | ValueError
CLIENT_ERRORS = (MinioException, Urllib3Error, OSError, ValueError)


def translate_error(
    exc: ClientError,
    *,
    store: str,
    bucket: str | None = None,
    key: str | None = None,
    secrets: tuple[str, ...] = (),
) -> OwdedupError:
    """Map a minio/urllib3 failure to our errors; the text names *store*, never a secret."""
    where = f"{bucket}/{key}" if bucket and key else (f"bucket {bucket!r}" if bucket else store)
    error: OwdedupError
    if isinstance(exc, S3Error):
        code = exc.code or "UnknownError"
        if code == "NoSuchBucket" or (code in _NOT_FOUND_CODES and key is None):
            name = bucket or exc.bucket_name or "?"
            error = NotFoundError(f"bucket {name!r} does not exist in {store}")
        elif code in _NOT_FOUND_CODES:
            error = NotFoundError(f"object {bucket}/{key} does not exist")
        elif code in _BAD_NAME_CODES:
            error = ConfigError(f"invalid name {where}: {code}: {exc.message or ''}".rstrip(": "))
        elif code in _CHECKSUM_CODES:
            error = StoreError(
                f"{store} rejected {where}: the data does not match its SHA-256 checksum ({code})"
            )
        elif code in _AUTH_CODES:
            error = StoreError(
                f"{store} refused access to {where}: {code} "
                "(check the store credentials and their permissions)"
            )
        else:
            error = StoreError(f"{store} failed on {where}: {code}: {exc.message or ''}".rstrip())
    elif isinstance(exc, ServerError):
        error = StoreError(f"{store} failed on {where}: HTTP {exc.status_code}")
    elif isinstance(exc, InvalidResponseError):
        status = getattr(exc, "_code", "?")
        error = StoreError(f"{store} gave a non-S3 answer (HTTP {status}) for {where}")
    elif isinstance(exc, Urllib3Error | OSError):
        error = StoreError(f"cannot reach {store} ({where}): {_transport_reason(exc)}")
    elif isinstance(exc, ValueError):
        error = ConfigError(f"invalid request for {where}: {exc}")
    else:  # any other MinioException
        error = StoreError(f"{store} failed on {where}: {type(exc).__name__}")
    return type(error)(scrub(str(error), secrets))


# -- the store ---------------------------------------------------------------------------------


def _check_bucket(bucket: str) -> None:
    try:
        check_bucket_name(bucket)
    except (ValueError, TypeError):
        raise ConfigError(
            f"invalid bucket name {bucket!r} (S3 bucket names are 3-63 letters, digits, "
            "'.' or '-', not an IP address)"
        ) from None


def _check_key(key: str) -> None:
    try:
        check_object_name(key)
        encoded = key.encode("utf-8")
    except (ValueError, TypeError, UnicodeError) as exc:
        raise ConfigError(f"invalid object key {key!r}: {exc or 'empty'}") from None
    if len(encoded) > 1024 or "\x00" in key:
        raise ConfigError(f"invalid object key {key!r}: longer than 1024 bytes or has NUL")


class S3Store(ObjectStore):
    scheme = "s3"

    def __init__(self, endpoint: Endpoint, options: S3Options | None = None) -> None:
        self.endpoint = endpoint
        opts = options or S3Options()
        self._secrets = opts.secrets()
        # Buckets ensure_bucket already found or made: a miss does not pay a HEAD each time.
        self._ensured: set[str] = set()
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            maxsize=10,
            cert_reqs="CERT_REQUIRED" if opts.cert_check else "CERT_NONE",
            ca_certs=str(opts.ca_bundle or os.environ.get("SSL_CERT_FILE") or certifi.where()),
            retries=urllib3.Retry(
                total=RETRIES, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self._client = Minio(
            endpoint.netloc,
            access_key=opts.access_key,
            secret_key=opts.secret_key,
            session_token=opts.session_token,
            secure=endpoint.secure,
            region=opts.region,
            http_client=self._http,
            cert_check=opts.cert_check,
        )

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, str]) -> S3Store:
        return cls(parse_endpoint(url), S3Options.parse(options))

    def describe(self) -> str:
        return f"s3 {self.endpoint.url}"

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint.url!r})"

    def close(self) -> None:
        self._http.clear()

    # -- errors ----------------------------------------------------------------------------

    def _fail(self, exc: ClientError, bucket: str | None, key: str | None = None) -> NoReturn:
        if isinstance(exc, S3Error) and exc.code == "NoSuchBucket" and bucket is not None:
            self._ensured.discard(bucket)  # removed behind our back: ensure it again next time
        raise translate_error(
            exc, store=self.describe(), bucket=bucket, key=key, secrets=self._secrets
        ) from exc

    def _missing(self, bucket: str, key: str) -> NotFoundError:
        """Object not found: say whether the bucket or the object is missing (one HEAD)."""
        if not self.bucket_exists(bucket):
            return NotFoundError(f"bucket {bucket!r} does not exist in {self.describe()}")
        return NotFoundError(f"object {bucket}/{key} does not exist")

    # -- reads -----------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo:
        _check_bucket(bucket)
        _check_key(key)
        try:
            stat = self._client.stat_object(bucket, key, extra_headers=dict(CHECKSUM_MODE))
        except S3Error as exc:
            if exc.code == "NoSuchKey":  # a HEAD has no body: the client guesses NoSuchKey
                raise self._missing(bucket, key) from None
            self._fail(exc, bucket, key)
        except CLIENT_ERRORS as exc:  # every client failure is translated; bugs propagate
            self._fail(exc, bucket, key)
        headers = stat.metadata or {}
        return ObjectInfo(
            bucket,
            key,
            int(stat.size or 0),
            sha256=checksum_from_headers(cast(Mapping[str, str], headers)),
            content_type=stat.content_type,
        )

    def open(self, bucket: str, key: str) -> AbstractContextManager[BinaryIO]:
        return self._get(bucket, key)

    def read_prefix(self, bucket: str, key: str, length: int) -> bytes:
        """A ranged GET (``Range: bytes=0-<length-1>``): the server sends no more."""
        try:
            with self._get(bucket, key, length=length) as stream:
                return read_at_most(stream, length)
        except StoreError as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code == "InvalidRange":
                return b""  # an empty object has no byte 0 to start a range at
            raise

    def _get(self, bucket: str, key: str, length: int = 0) -> AbstractContextManager[BinaryIO]:
        """GET the object's body (its first *length* bytes when *length* > 0) as a stream."""
        _check_bucket(bucket)
        _check_key(key)
        try:
            response = self._client.get_object(bucket, key, offset=0, length=length)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise NotFoundError(f"object {bucket}/{key} does not exist") from None
            self._fail(exc, bucket, key)
        except CLIENT_ERRORS as exc:
            self._fail(exc, bucket, key)
        # The stored bytes, as they are: never un-gzip a Content-Encoding: gzip object.
        response.decode_content = False
        return self._body(response, bucket, key)

    @contextmanager
    def _body(self, response: BaseHTTPResponse, bucket: str, key: str) -> Iterator[BinaryIO]:
        """The response as a stream; closed and its connection released on exit."""
        try:
            yield cast(BinaryIO, response)
        except Urllib3Error as exc:  # connection lost while the caller was reading
            self._fail(exc, bucket, key)
        finally:
            response.close()
            response.release_conn()

    def list(
        self, bucket: str, prefix: str = "", *,
        on_unreadable: Callable[[str, str], None] | None = None,
    ) -> Iterator[ObjectInfo]:
        """Every object under *prefix* (recursively), in key order as S3 lists them; a listing
        that fails fails whole (there are no unreadable parts to report)."""
        _check_bucket(bucket)
        try:
            for obj in self._client.list_objects(bucket, prefix=prefix or None, recursive=True):
                if obj.is_dir or obj.object_name is None:
                    continue
                yield ObjectInfo(bucket, obj.object_name, int(obj.size or 0))
        except CLIENT_ERRORS as exc:
            self._fail(exc, bucket)

    def bucket_exists(self, bucket: str) -> bool:
        _check_bucket(bucket)
        try:
            return bool(self._client.bucket_exists(bucket))
        except S3Error as exc:
            if exc.code == "NoSuchBucket":  # from the region lookup
                return False
            self._fail(exc, bucket)
        except CLIENT_ERRORS as exc:
            self._fail(exc, bucket)

    # -- writes ----------------------------------------------------------------------------

    def ensure_bucket(self, bucket: str) -> None:
        """Make *bucket* unless it exists; a bucket this store already ensured costs nothing."""
        if bucket in self._ensured:
            return
        if self.bucket_exists(bucket):
            self._ensured.add(bucket)
            return
        try:
            self._client.make_bucket(bucket)
        except S3Error as exc:
            already = exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
            if already and self.bucket_exists(bucket):
                self._ensured.add(bucket)
                return  # created concurrently (by us or a peer)
            self._fail(exc, bucket)
        except ValueError:  # the client's stricter check for new bucket names
            raise ConfigError(
                f"invalid name for a new bucket {bucket!r} (3-63 lowercase letters, digits, "
                "'.' or '-')"
            ) from None
        except CLIENT_ERRORS as exc:
            self._fail(exc, bucket)
        self._ensured.add(bucket)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
    ) -> ObjectInfo:
        """One PutObject carrying ``x-amz-checksum-sha256`` (the server checks the body).

        A wrong *sha256* is refused by the server (``StoreError``): it is never stored.
        """
        _check_bucket(bucket)
        _check_key(key)
        if len(data) > MAX_PART_SIZE:
            raise ConfigError(
                f"{bucket}/{key}: {len(data)} bytes is more than one PutObject takes (5 GiB)"
            )
        checksum = sha256_hex_to_checksum(sha256 or hashlib.sha256(data).hexdigest())
        try:
            result = self._client.put_object(
                bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type or "application/octet-stream",
                # x-amz-* entries are sent as headers as they are (not as x-amz-meta-*).
                metadata={CHECKSUM_HEADER: checksum},
                # One part: a multipart upload would leave a composite checksum instead.
                part_size=MAX_PART_SIZE,
            )
        except CLIENT_ERRORS as exc:
            self._fail(exc, bucket, key)
        stored = checksum_from_headers(cast(Mapping[str, str], result.http_headers or {}))
        return ObjectInfo(bucket, key, len(data), sha256=stored, content_type=content_type)

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> ObjectInfo:
        """Server-side CopyObject; the server computes the copy's SHA-256 checksum."""
        info = self.head(src_bucket, src_key)
        _check_bucket(dst_bucket)
        _check_key(dst_key)
        try:
            result = self._client.copy_object(
                dst_bucket,
                dst_key,
                CopySource(src_bucket, src_key),
                metadata={"x-amz-checksum-algorithm": "SHA256"},
            )
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                if not self.bucket_exists(dst_bucket):
                    raise NotFoundError(
                        f"bucket {dst_bucket!r} does not exist in {self.describe()}"
                    ) from None
                raise self._missing(src_bucket, src_key) from None
            self._fail(exc, dst_bucket, dst_key)
        except CLIENT_ERRORS as exc:
            self._fail(exc, dst_bucket, dst_key)
        stored = checksum_from_headers(cast(Mapping[str, str], result.http_headers or {}))
        return ObjectInfo(
            dst_bucket, dst_key, info.size, sha256=stored, content_type=info.content_type
        )

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object; a missing object (or bucket, as in the folder store) is fine."""
        _check_bucket(bucket)
        _check_key(key)
        try:
            self._client.remove_object(bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                return
            self._fail(exc, bucket, key)
        except CLIENT_ERRORS as exc:
            self._fail(exc, bucket, key)
