"""What a wrapped call is keyed by, and the result records (issue 10, items 4 and 5)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from owdedup.runtime.errors import BadInputError, ConfigError, StoreError
from owdedup.runtime.records import Record
from owdedup.runtime.records.base import RESULT_LIMIT_BYTES
from owdedup.runtime.stores.folder import FolderStore
from owdedup.runtime.wrapped.keying import ObjectParam, key_call, parse_objects


@pytest.fixture
def store(store_root: Path) -> FolderStore:
    (store_root / "photos" / "a.jpg").write_bytes(b"content")
    (store_root / "photos" / "b.jpg").write_bytes(b"content")
    return FolderStore(store_root)


def key(store: FolderStore, params: dict[str, object], *, ignore: tuple[str, ...] = (),
        objects: str | None = None, fingerprint: str = "v1") -> tuple[str, str]:
    call = key_call(params, function="f", fingerprint=fingerprint,
                    objects=parse_objects(objects), ignore=ignore, store=store)
    return call.function_id, call.input_digest


def test_one_object_is_keyed_by_its_content_sha256(store: FolderStore) -> None:
    fid, digest = key(store, {"bucket": "photos", "key": "a.jpg"})
    assert digest == hashlib.sha256(b"content").hexdigest()  # the thumbnail's input digest
    assert key(store, {"key": "b.jpg", "bucket": "photos"}) == (fid, digest)


def test_parameters_shape_the_identity_in_any_order_but_ignored_ones(
    store: FolderStore
) -> None:
    base = key(store, {"bucket": "photos", "key": "a.jpg", "a": 1, "b": {"x": [1, 2]}})
    assert key(store, {"b": {"x": [1, 2]}, "a": 1, "key": "a.jpg", "bucket": "photos"}) == base
    assert key(store, {"bucket": "photos", "key": "a.jpg", "a": 2, "b": {"x": [1, 2]}}) != base
    assert key(store, {"bucket": "photos", "key": "a.jpg", "a": 1, "b": {"x": [1, 2]},
                       "dest": "q"}, ignore=("dest",)) == base
    assert key(store, {"bucket": "photos", "key": "a.jpg", "a": 1, "b": {"x": [1, 2]}},
               fingerprint="v2") != base


def test_ignored_parameters_are_not_kept(store: FolderStore) -> None:
    call = key_call({"bucket": "photos", "key": "a.jpg", "token": "secret", "n": 1},
                    function="f", fingerprint="v", objects=parse_objects(None),
                    ignore=("token",), store=store)
    assert call.param_names == ("n",)
    assert call.objects == {"photos/a.jpg": hashlib.sha256(b"content").hexdigest()}


def test_without_objects_a_call_is_keyed_by_its_parameters(store: FolderStore) -> None:
    assert parse_objects("-") == ()
    one = key(store, {"n": 1}, objects="-")
    assert one == key(store, {"n": 1}, objects="-") and one != key(store, {"n": 2}, objects="-")


@pytest.mark.parametrize("spec", ["bucket", "/key", "a/b/c", "bucket/key,bucket/other"])
def test_bad_object_declarations_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_objects(spec)


def test_object_param_text() -> None:
    assert str(ObjectParam.parse(" src_bucket/src_key ")) == "src_bucket/src_key"


def test_a_result_over_the_limit_or_not_json_makes_no_record() -> None:
    with pytest.raises(BadInputError, match="over OpenWhisk's 1048576-byte result limit"):
        Record.for_result(function="f", function_id="a" * 64, input_digest="d" * 64,
                          result={"blob": "x" * RESULT_LIMIT_BYTES})
    with pytest.raises(BadInputError, match="not JSON"):
        Record.for_result(function="f", function_id="a" * 64, input_digest="d" * 64,
                          result={"when": {1}})


def test_a_forged_result_record_is_not_believed() -> None:
    record = Record.for_result(function="f", function_id="a" * 64, input_digest="d" * 64,
                               result={"n": 1})
    assert record.result_mismatch("a" * 64, "d" * 64) is None
    assert record.result_mismatch("b" * 64, "d" * 64) is not None
    assert record.result_mismatch("a" * 64, "e" * 64) is not None
    doc = record.to_dict()
    doc["result"] = {"n": 1000}  # a result swapped in without its declared size
    assert Record.from_dict(doc).result_mismatch("a" * 64, "d" * 64) is not None
    doc["result"] = ["not", "an", "object"]
    with pytest.raises(StoreError, match="malformed record"):
        Record.from_dict(doc)
