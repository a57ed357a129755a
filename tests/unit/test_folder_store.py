from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from owdedup.runtime.errors import ConfigError, NotFoundError
from owdedup.runtime.stores import open_store
from owdedup.runtime.stores.folder import FolderStore
from tests.object_store_contract import ObjectStoreContract


@pytest.fixture
def store(store_root: Path) -> FolderStore:
    s = open_store(f"file://{store_root}")
    assert isinstance(s, FolderStore)
    return s


class TestFolderStoreContract(ObjectStoreContract):
    @pytest.fixture
    def object_store(self, store: FolderStore) -> FolderStore:
        return store

    @pytest.fixture
    def buckets(self, store: FolderStore) -> list[str]:
        names = ["contract-in", "contract-out"]
        for name in names:
            store.ensure_bucket(name)
        return names


def test_put_head_read_list_copy_delete(store: FolderStore) -> None:
    store.put("photos", "a/b.jpg", b"hello")
    store.put("photos", "c.jpg", b"world!")
    assert store.head("photos", "a/b.jpg").size == 5
    assert store.read_bytes("photos", "c.jpg") == b"world!"
    assert [i.key for i in store.list("photos")] == ["a/b.jpg", "c.jpg"]
    assert [i.key for i in store.list("photos", "a/")] == ["a/b.jpg"]
    store.copy("photos", "c.jpg", "thumbs", "copy/c.jpg")
    assert store.read_bytes("thumbs", "copy/c.jpg") == b"world!"
    store.delete("photos", "c.jpg")
    store.delete("photos", "c.jpg")  # deleting a missing object is not an error
    assert not store.exists("photos", "c.jpg")


def test_bare_path_means_folder(store_root: Path) -> None:
    s = open_store(str(store_root))
    assert isinstance(s, FolderStore) and s.root == store_root.resolve()


@pytest.mark.parametrize(
    "key", ["../escape.jpg", "a/../../escape.jpg", "/etc/passwd", "a\x00b", "a//b", "./a", ""]
)
def test_keys_that_leave_the_root_are_rejected(store: FolderStore, key: str) -> None:
    with pytest.raises(ConfigError):
        store.put("photos", key, b"x")
    with pytest.raises(ConfigError):
        store.head("photos", key)


@pytest.mark.parametrize("bucket", ["..", ".hidden", "a/b", ""])
def test_bad_bucket_names_are_rejected(store: FolderStore, bucket: str) -> None:
    with pytest.raises(ConfigError):
        store.head(bucket, "k")


def test_missing_bucket_and_object_are_not_found(store: FolderStore) -> None:
    with pytest.raises(NotFoundError, match="bucket 'nope' does not exist"):
        store.head("nope", "a.jpg")
    with pytest.raises(NotFoundError, match=r"photos/missing\.jpg does not exist"):
        store.head("photos", "missing.jpg")
    with pytest.raises(NotFoundError):
        store.open("photos", "missing.jpg")
    with pytest.raises(NotFoundError):
        list(store.list("nope"))


def test_failed_write_leaves_no_partial_or_temp_file(store: FolderStore, store_root: Path) -> None:
    store.put("photos", "file", b"x")
    with pytest.raises(ConfigError):
        store.put("photos", "file/child.jpg", b"y")  # a parent of the key is an object
    leftovers = [p.name for p in (store_root / "photos").rglob("*")]
    assert leftovers == ["file"]


def test_temp_files_are_not_listed(store: FolderStore, store_root: Path) -> None:
    store.put("photos", "a.jpg", b"x")
    (store_root / "photos" / ".a.jpg.owdedup-tmp-1-2").write_bytes(b"partial")
    assert [i.key for i in store.list("photos")] == ["a.jpg"]


def test_put_is_atomic_replace(store: FolderStore, store_root: Path) -> None:
    store.put("photos", "a.jpg", b"old")
    inode_before = (store_root / "photos" / "a.jpg").stat().st_ino
    store.put("photos", "a.jpg", b"new content")
    path = store_root / "photos" / "a.jpg"
    assert path.read_bytes() == b"new content"
    assert path.stat().st_ino != inode_before  # replaced by rename, not rewritten in place


def _xattrs_supported(path: Path) -> bool:
    probe = path / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.test", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


def test_checksum_is_kept_and_invalidated_when_file_changes(
    store: FolderStore, store_root: Path
) -> None:
    if not _xattrs_supported(store_root):
        pytest.skip("filesystem without user extended attributes")
    data = b"some image bytes"
    digest = hashlib.sha256(data).hexdigest()
    store.put("photos", "a.jpg", data)
    info = store.head("photos", "a.jpg")
    assert info.sha256 is None  # no checksum given at upload
    store.remember_sha256(info, digest)
    assert store.head("photos", "a.jpg").sha256 == digest
    path = store_root / "photos" / "a.jpg"
    path.write_bytes(b"rewritten in place with other bytes")
    assert store.head("photos", "a.jpg").sha256 is None  # stale checksum never trusted
    # A digest taken before a same-size rewrite is not remembered for the new content.
    before = store.head("photos", "a.jpg")
    os.utime(path, ns=(before_ns := path.stat().st_mtime_ns, before_ns + 1_000_000))
    store.remember_sha256(before, "0" * 64)
    assert store.head("photos", "a.jpg").sha256 is None
    store.put("photos", "b.jpg", data, sha256=digest)
    assert store.head("photos", "b.jpg").sha256 == digest  # uploads carry their checksum
