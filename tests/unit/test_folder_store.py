from __future__ import annotations

import hashlib
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

import pytest

from owdedup.runtime import atomic
from owdedup.runtime.action import error_result
from owdedup.runtime.context import Context
from owdedup.runtime.errors import BadInputError, ConfigError, NotFoundError, OwdedupError
from owdedup.runtime.job import Job
from owdedup.runtime.pipeline import hash_step
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


def test_checksum_is_kept_and_invalidated_when_file_changes(
    store: FolderStore, store_root: Path
) -> None:
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


def test_a_same_size_rewrite_with_the_mtime_put_back_is_not_given_the_old_digest(
    store: FolderStore, store_root: Path
) -> None:
    old, new = b"the first content", b"other bytes here!"
    assert len(old) == len(new)
    store.put("photos", "a.jpg", old, sha256=hashlib.sha256(old).hexdigest())
    path = store_root / "photos" / "a.jpg"
    before = path.stat()
    with path.open("r+b") as handle:  # in place: same inode, same size
        handle.write(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    assert store.head("photos", "a.jpg").sha256 is None  # ctime moved: hash again


def test_the_digest_cache_is_private_and_a_foreign_one_is_not_trusted(
    store: FolderStore, store_root: Path
) -> None:
    data = b"cached content"
    store.put("photos", "a.jpg", data, sha256=hashlib.sha256(data).hexdigest())
    cache = store_root / ".owdedup-cache"
    assert cache.stat().st_mode & 0o777 == 0o700
    assert store.head("photos", "a.jpg").sha256 is not None
    cache.chmod(0o777)  # anyone could now write the digests: none is believed
    fresh = open_store(f"file://{store_root}")
    assert fresh.head("photos", "a.jpg").sha256 is None


# -- symbolic links (issue 8, item 11) ----------------------------------------------------

@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_bytes(b"root:x:0:0:secret")
    return secret


def test_a_linked_file_is_neither_read_nor_hashed_but_listed(
    store: FolderStore, store_root: Path, outside: Path
) -> None:
    (store_root / "photos" / "link.jpg").symlink_to(outside)
    for read in (store.head, store.open, store.read_bytes):
        with pytest.raises(BadInputError, match=r"photos/link\.jpg is .*symbolic link"):
            read("photos", "link.jpg")
    # Listed (so a run reports it as failed, with the reason), never read.
    assert [i.key for i in store.list("photos")] == ["link.jpg"]


def test_a_linked_folder_is_not_followed(
    store: FolderStore, store_root: Path, outside: Path
) -> None:
    (store_root / "photos" / "etc").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(BadInputError, match="symbolic link"):
        store.read_bytes("photos", "etc/passwd")
    with pytest.raises(BadInputError, match="symbolic link"):
        store.put("photos", "etc/planted.jpg", b"x")
    with pytest.raises(BadInputError, match="symbolic link"):
        store.delete("photos", "etc/passwd")
    assert [i.key for i in store.list("photos")] == ["etc"]  # the link, not its contents
    assert outside.read_bytes() == b"root:x:0:0:secret"
    assert sorted(p.name for p in outside.parent.iterdir()) == ["passwd"]


def test_hashing_a_linked_object_fails_naming_it(
    context: Context, store_root: Path, outside: Path
) -> None:
    (store_root / "photos" / "link.jpg").symlink_to(outside)
    params = {"bucket": "photos", "key": "link.jpg", "dest_bucket": "thumbs"}
    with pytest.raises(OwdedupError) as failure:
        hash_step(Job.from_params(params), context)
    result = error_result(failure.value, params)
    assert result["error_kind"] == "bad-input"
    assert "link.jpg" in result["error"] and "symbolic link" in result["error"]


def test_a_fifo_under_an_object_name_does_not_hang_a_read(
    store: FolderStore, store_root: Path
) -> None:
    os.mkfifo(store_root / "photos" / "pipe.jpg")
    with pytest.raises(NotFoundError, match="not a file"):
        store.head("photos", "pipe.jpg")


# -- temporary files (issue 8, item 12) ---------------------------------------------------

def test_a_planted_link_at_the_old_predictable_temp_name_is_not_written_through(
    store: FolderStore, store_root: Path, outside: Path
) -> None:
    import threading

    folder = store_root / "thumbs"
    # The name the store used to write through: .<name>.owdedup-tmp-<pid>-<thread id>
    (folder / f".a.jpg.owdedup-tmp-{os.getpid()}-{threading.get_ident()}").symlink_to(outside)
    store.put("thumbs", "a.jpg", b"thumbnail")
    assert outside.read_bytes() == b"root:x:0:0:secret"
    assert (folder / "a.jpg").read_bytes() == b"thumbnail"


def test_a_temp_name_that_is_taken_is_never_opened(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = tmp_path / ".target.owdedup-tmp-guessed"
    planted.symlink_to(outside)
    monkeypatch.setattr(atomic, "temp_name", lambda name: planted.name)  # always guessed
    with pytest.raises(FileExistsError):
        atomic.write_atomic(tmp_path / "target", b"data")
    assert outside.read_bytes() == b"root:x:0:0:secret"
    assert not (tmp_path / "target").exists() and planted.is_symlink()


def test_atomic_write_is_private_by_default(tmp_path: Path) -> None:
    st = atomic.write_atomic(tmp_path / "state.json", b"{}")
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600
    assert st.st_ino == (tmp_path / "state.json").stat().st_ino
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_atomic_write_leaves_the_target_and_no_temp(tmp_path: Path) -> None:
    (tmp_path / "keep").write_bytes(b"old")

    def fail(_out: object) -> None:
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        atomic.write_atomic(tmp_path / "keep", fail)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
    assert (tmp_path / "keep").read_bytes() == b"old"


def test_a_file_where_the_bucket_should_be_is_named_with_the_cause(
    store: FolderStore, store_root: Path
) -> None:
    (store_root / "out.jpg").write_bytes(b"a file")
    with pytest.raises(ConfigError, match=r"'out\.jpg' as a bucket: .* is not a folder"):
        store.ensure_bucket("out.jpg")



def test_a_copy_of_a_source_replaced_meanwhile_is_not_given_the_old_digest(
    store: FolderStore, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = b"the content that was hashed", b"another content, put in its place"
    store.put("photos", "a.jpg", old, sha256=hashlib.sha256(old).hexdigest())
    opened = store.open

    def replaced_first(bucket: str, key: str) -> AbstractContextManager[BinaryIO]:
        # Someone renames another file over the source just as the copy begins.
        (store_root / "photos" / "new.tmp").write_bytes(new)
        (store_root / "photos" / "new.tmp").replace(store_root / "photos" / "a.jpg")
        return opened(bucket, key)

    monkeypatch.setattr(store, "open", replaced_first)
    store.copy("photos", "a.jpg", "thumbs", "a.jpg")
    monkeypatch.undo()
    assert store.read_bytes("thumbs", "a.jpg") == new
    assert store.head("thumbs", "a.jpg").sha256 in (None, hashlib.sha256(new).hexdigest())
