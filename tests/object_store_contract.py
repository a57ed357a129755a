"""The behaviour every object store must have, run against each backend (as
:mod:`tests.record_store_contract` is for record stores).

A backend's test module subclasses :class:`ObjectStoreContract` and provides an
``object_store`` fixture (the store) and a ``buckets`` fixture (two fresh, existing, empty
buckets: source and destination); every backend then answers to the same tests: the folder
store in tests/unit/test_folder_store.py, MinIO in tests/services/test_s3_store.py.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from owdedup.runtime.errors import NotFoundError, StoreError
from owdedup.runtime.stores import ObjectStore

#: A key with what S3 keys may hold and URLs and paths make hard: folders, spaces, brackets,
#: a plus sign, non-ASCII letters.
AWKWARD_KEY = "holiday/2024/my photo (1)+é.jpg"


class ObjectStoreContract:
    def test_put_head_read_list_copy_delete(self, object_store: ObjectStore,
                                            buckets: list[str]) -> None:
        src, dst = buckets
        store = object_store
        put = store.put(src, "a/b.jpg", b"hello")
        assert (put.bucket, put.key, put.size) == (src, "a/b.jpg", 5)
        store.put(src, "c.jpg", b"world!")
        store.put(src, "a/z/empty.jpg", b"")
        assert store.head(src, "a/b.jpg").size == 5
        assert store.read_bytes(src, "c.jpg") == b"world!"
        assert store.read_bytes(src, "a/z/empty.jpg") == b""
        assert [(i.key, i.size) for i in store.list(src)] == [
            ("a/b.jpg", 5), ("a/z/empty.jpg", 0), ("c.jpg", 6)]  # in key order
        assert [i.key for i in store.list(src, "a/")] == ["a/b.jpg", "a/z/empty.jpg"]
        assert list(store.list(src, "nothing/")) == []
        copied = store.copy(src, "c.jpg", dst, "copy/c.jpg")
        assert (copied.bucket, copied.key, copied.size) == (dst, "copy/c.jpg", 6)
        assert store.read_bytes(dst, "copy/c.jpg") == b"world!"
        store.delete(src, "c.jpg")
        store.delete(src, "c.jpg")  # deleting a missing object is not an error
        assert not store.exists(src, "c.jpg") and store.exists(src, "a/b.jpg")

    def test_a_put_replaces_the_whole_object(self, object_store: ObjectStore,
                                             buckets: list[str]) -> None:
        src, _ = buckets
        object_store.put(src, "k", b"a longer first version")
        object_store.put(src, "k", b"short")
        assert object_store.read_bytes(src, "k") == b"short"
        assert object_store.head(src, "k").size == 5
        assert [i.key for i in object_store.list(src)] == ["k"]

    def test_an_awkward_key_round_trips(self, object_store: ObjectStore,
                                        buckets: list[str]) -> None:
        src, _ = buckets
        object_store.put(src, AWKWARD_KEY, b"x")
        assert [i.key for i in object_store.list(src)] == [AWKWARD_KEY]
        assert [i.key for i in object_store.list(src, "holiday/2024/my photo")] == [AWKWARD_KEY]
        assert object_store.read_bytes(src, AWKWARD_KEY) == b"x"

    def test_a_large_object_streams_whole(self, object_store: ObjectStore,
                                          buckets: list[str]) -> None:
        src, _ = buckets
        data = os.urandom(3 * 1024 * 1024 + 17)
        object_store.put(src, "big.bin", data)
        with object_store.open(src, "big.bin") as stream:
            read = b"".join(iter(lambda: stream.read(64 * 1024), b""))
        assert hashlib.sha256(read).digest() == hashlib.sha256(data).digest()

    def test_a_given_checksum_is_kept_and_a_wrong_one_refused(
        self, object_store: ObjectStore, buckets: list[str]
    ) -> None:
        """A head that returns a sha256 lets ``hash`` skip reading the body: it must never
        be a checksum the content does not have."""
        src, dst = buckets
        digest = hashlib.sha256(b"hello").hexdigest()
        assert object_store.put(src, "given", b"hello", sha256=digest).sha256 == digest
        assert object_store.head(src, "given").sha256 == digest
        assert object_store.copy(src, "given", dst, "given").sha256 == digest
        with pytest.raises(StoreError, match="does not match its SHA-256"):
            object_store.put(src, "wrong", b"data", sha256="00" * 32)
        assert not object_store.exists(src, "wrong")

    def test_missing_objects_and_buckets_are_not_found(
        self, object_store: ObjectStore, buckets: list[str]
    ) -> None:
        src, dst = buckets
        gone = f"{src}-missing"
        with pytest.raises(NotFoundError, match=rf"object {src}/nope\.jpg does not exist"):
            object_store.head(src, "nope.jpg")
        with pytest.raises(NotFoundError, match=rf"object {src}/nope\.jpg does not exist"):
            object_store.open(src, "nope.jpg")
        with pytest.raises(NotFoundError, match=rf"object {src}/nope\.jpg does not exist"):
            object_store.copy(src, "nope.jpg", dst, "x")
        for call in (lambda: object_store.head(gone, "a"), lambda: object_store.open(gone, "a"),
                     lambda: object_store.put(gone, "a", b"x"),
                     lambda: list(object_store.list(gone))):
            with pytest.raises(NotFoundError, match=f"bucket '{gone}' does not exist"):
                call()
        object_store.put(src, "a", b"x")
        with pytest.raises(NotFoundError, match=f"bucket '{gone}' does not exist"):
            object_store.copy(src, "a", gone, "a")
        object_store.delete(gone, "a")  # nothing to delete is not an error
        assert not object_store.exists(src, "nope.jpg")

    def test_ensure_bucket_is_idempotent(self, object_store: ObjectStore,
                                         buckets: list[str]) -> None:
        src, _ = buckets
        object_store.put(src, "kept", b"x")
        object_store.ensure_bucket(src)
        assert object_store.bucket_exists(src) and object_store.exists(src, "kept")
        assert not object_store.bucket_exists(f"{src}-missing")
