"""The cache folder: entries fetched once, evicted least recently used first, the limit
held, and what a dead fetcher left behind cleaned up."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from filelock import FileLock

from medshard.shards.cache import CacheDir

PATTERNS = ("wds/*.tar", "zarr/*/")


def writer(size: int, calls: list | None = None, gate: threading.Event | None = None):
    def fill(path: Path) -> None:
        if calls is not None:
            calls.append(path)
        if gate is not None:
            gate.wait(timeout=30)
        path.write_bytes(b"x" * size)

    return fill


def wait_for(condition) -> None:
    """Wait (bounded) until another thread has got somewhere."""
    for _ in range(3000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the other thread never got there")


def read(fd: int) -> bytes:
    try:
        return os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)


def test_an_entry_is_fetched_once_then_read_in_place(tmp_path):
    cache = CacheDir(tmp_path, limit=1000, evictable=PATTERNS)
    calls = []
    assert read(cache.open("wds/a.tar", 100, writer(100, calls))) == b"x" * 100
    assert read(cache.open("wds/a.tar", 100, writer(100, calls))) == b"x" * 100
    assert len(calls) == 1
    assert cache.usage() == 100


def test_the_least_recently_used_entry_is_evicted_and_the_limit_held(tmp_path):
    cache = CacheDir(tmp_path, limit=250, evictable=PATTERNS)
    (tmp_path / "manifest.parquet").write_bytes(b"t" * 50)  # a table: counted, never evicted
    for name in ("a", "b"):
        os.close(cache.open(f"wds/{name}.tar", 100, writer(100)))
    os.utime(tmp_path / "wds/a.tar", (1, 1))  # a: used long ago
    os.close(cache.open("wds/c.tar", 100, writer(100)))
    assert sorted(p.name for p in (tmp_path / "wds").iterdir()) == ["b.tar", "c.tar"]
    assert (tmp_path / "manifest.parquet").is_file()
    assert cache.usage() <= 250


def test_many_fetches_never_leave_the_cache_above_its_limit(tmp_path):
    cache = CacheDir(tmp_path, limit=300, evictable=PATTERNS)
    for i in [0, 1, 2, 3, 1, 4, 0, 5, 2, 6, 3, 1]:
        size = 60 + 20 * (i % 3)
        assert len(read(cache.open(f"wds/{i}.tar", size, writer(size)))) == size
        assert cache.usage() <= 300


def test_a_folder_entry_is_fetched_whole_and_evicted_whole(tmp_path):
    cache = CacheDir(tmp_path, limit=150, evictable=PATTERNS)

    def group(path: Path) -> None:
        (path / "image" / "c").mkdir(parents=True)
        (path / "zarr.json").write_bytes(b"{}" * 10)
        (path / "image" / "c" / "0").write_bytes(b"x" * 80)

    first = cache.fetch_dir("zarr/k1", 100, group)
    assert (first / "image" / "c" / "0").stat().st_size == 80
    os.utime(first, (1, 1))
    cache.fetch_dir("zarr/k2", 100, group)
    assert not first.exists() and (tmp_path / "zarr/k2/zarr.json").is_file()
    assert cache.usage() <= 150


def test_two_readers_of_a_missing_entry_fetch_it_once(tmp_path):
    cache = CacheDir(tmp_path, limit=1000, evictable=PATTERNS)
    calls, gate, results = [], threading.Event(), []

    def reader() -> None:
        results.append(read(cache.open("wds/a.tar", 10, writer(10, calls, gate))))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: calls)  # the first fetch has begun; the other reader waits for it
    gate.set()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [b"x" * 10] * 2 and len(calls) == 1


def test_no_room_while_fetches_under_way_hold_the_cache(tmp_path):
    """Every byte reserved by a fetch that is still running: the answer is None at once
    (the caller reads around the cache), not a wait."""
    cache = CacheDir(tmp_path, limit=100, evictable=PATTERNS)
    gate, started = threading.Event(), []
    holder = threading.Thread(
        target=lambda: os.close(cache.open("wds/big.tar", 90, writer(90, started, gate)))
    )
    holder.start()
    wait_for(lambda: started)
    assert cache.open("wds/other.tar", 50, writer(50)) is None
    gate.set()
    holder.join(timeout=30)
    assert (tmp_path / "wds/big.tar").stat().st_size == 90


def test_what_a_dead_fetcher_left_is_removed(tmp_path):
    cache = CacheDir(tmp_path, limit=100, evictable=PATTERNS)
    (tmp_path / "wds").mkdir()
    partial = tmp_path / "wds" / "a.tar.tmp-0123456789ab"
    partial.write_bytes(b"x" * 70)
    (tmp_path / ".reserved").mkdir()
    (tmp_path / ".reserved" / "wds%2Fa.tar.70").touch()  # its reservation, lock not held
    assert cache.usage() == 0
    assert not partial.exists()
    os.close(cache.open("wds/b.tar", 90, writer(90)))  # the room it held is free again


def test_a_fetch_under_way_is_left_alone(tmp_path):
    cache = CacheDir(tmp_path, limit=100, evictable=PATTERNS)
    (tmp_path / "wds").mkdir()
    partial = tmp_path / "wds" / "a.tar.tmp-0123456789ab"
    partial.write_bytes(b"x" * 70)
    (tmp_path / ".reserved").mkdir()
    (tmp_path / ".reserved" / "wds%2Fa.tar.70").touch()
    (tmp_path / ".locks").mkdir()
    with FileLock(tmp_path / ".locks" / "wds%2Fa.tar.lock"):  # its fetcher is alive
        assert cache.usage() == 70
        assert partial.exists()


def test_a_failed_fetch_leaves_nothing(tmp_path):
    cache = CacheDir(tmp_path, limit=100, evictable=PATTERNS)

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("connection cut")

    with pytest.raises(OSError, match="connection cut"):
        cache.open("wds/a.tar", 10, broken)
    assert cache.usage() == 0
    assert list((tmp_path / "wds").iterdir()) == []


def test_a_fetch_that_may_not_evict_takes_only_free_room(tmp_path):
    cache = CacheDir(tmp_path, limit=250, evictable=PATTERNS)
    os.close(cache.open("wds/a.tar", 100, writer(100)))
    calls = []
    os.close(cache.open("wds/b.tar", 100, writer(100, calls), evict=False))  # free room
    assert cache.fetch_dir("zarr/c", 100, writer(100, calls), evict=False) is None
    assert cache.open("wds/c.tar", 100, writer(100, calls), evict=False) is None
    assert len(calls) == 1 and (tmp_path / "wds/a.tar").is_file()  # nothing evicted
    assert cache.usage() == 200
    os.close(cache.open("wds/c.tar", 100, writer(100)))  # a read evicts as before
    assert cache.usage() <= 250
