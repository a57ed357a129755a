"""How ``map``'s pool hands out work: a task waits behind a running one only while every
worker still has more to come (at the end of the work it goes to an idle worker), and the
workers' memory setting (``owdedup.allocator``)."""

from __future__ import annotations

import ctypes
import sys
from collections import deque
from typing import Any

import pytest

from owdedup import allocator, workers
from owdedup.runtime.errors import ConfigError
from owdedup.workpool import DEPTH, WorkerPool


class _Idle:
    """A worker as the pool sees it: only its queue of tags."""

    def __init__(self, *tags: str) -> None:
        self.queue: deque[tuple[str, tuple[Any, ...]]] = deque((t, ()) for t in tags)


def _pool(*workers: _Idle) -> WorkerPool:
    pool = WorkerPool.__new__(WorkerPool)  # no processes: only the bookkeeping is tested
    pool._workers = list(workers)  # type: ignore[arg-type]
    return pool


def test_with_work_for_every_worker_each_gets_a_task_queued_behind_its_running_one() -> None:
    pool = _pool(_Idle("a"), _Idle("b"))
    assert pool.free(pending=10) == 2 * DEPTH - 2


def test_at_the_end_of_the_work_no_task_waits_behind_a_running_one() -> None:
    # Two tasks left, two workers, one of them busy: one task now, for the idle worker; the
    # other waits in the coordinator for whichever worker is free first. Queued behind "a"
    # it would wait for "a" to end while "b" idles.
    pool = _pool(_Idle("a"), _Idle())
    assert pool.free(pending=2) == 1
    assert pool.free(pending=1) == 1
    assert _pool(_Idle("a"), _Idle("b")).free(pending=2) == 0


@pytest.mark.parametrize(("value", "mib"), [("", allocator.DEFAULT_KEEP_MIB), ("0", 0),
                                             (" 64 ", 64)])
def test_keep_heap_setting(value: str, mib: int) -> None:
    assert allocator.keep_mib({"OWDEDUP_KEEP_HEAP_MB": value}) == mib


@pytest.mark.parametrize("value", ["-1", "1.5", "lots", "²", "2048", "4096",
                                   "99999999999999"])
def test_a_keep_heap_setting_that_is_no_whole_number_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match=f"OWDEDUP_KEEP_HEAP_MB={value!r}: expected a whole "
                       "number of MiB from 0 to 2047"):
        allocator.keep_mib({"OWDEDUP_KEEP_HEAP_MB": value})


def test_zero_changes_nothing() -> None:
    assert allocator.keep_freed_memory(0) is False


def test_watch_refuses_a_bad_keep_heap_setting_before_starting_its_workers() -> None:
    with pytest.raises(ConfigError, match="OWDEDUP_KEEP_HEAP_MB='x'"):
        workers.pool(1, None, {"OWDEDUP_KEEP_HEAP_MB": "x"})


def test_the_largest_setting_reaches_glibc_as_it_is() -> None:
    """2047 MiB is the most a C int of bytes holds; 4096 MiB would have reached glibc as 0."""
    assert allocator.keep_mib({"OWDEDUP_KEEP_HEAP_MB": "2047"}) == allocator.MAX_KEEP_MIB == 2047


class _Mallopt:
    """glibc's mallopt as ctypes hands it out, taking the trim threshold and refusing the
    mmap threshold (as glibc releases that cap it at 32 MiB do)."""

    argtypes: object = None
    restype: object = None

    def __call__(self, option: int, value: int) -> int:
        return 0 if option == -3 else 1


class _RefusingLibc:
    def __init__(self, _name: object) -> None:
        self.mallopt = _Mallopt()


def test_a_refused_setting_is_said_not_swallowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(ctypes, "CDLL", _RefusingLibc)
    monkeypatch.setattr(sys, "platform", "linux")
    with caplog.at_level("WARNING", logger="owdedup"):
        assert allocator.keep_freed_memory(512) is False
    assert "mallopt refused a 512 MiB mmap threshold" in caplog.text
