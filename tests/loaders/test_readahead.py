"""Reading ahead of the plan: byte runs are a pure function of the plan and the manifest's
offsets (shard order merges into whole runs, a shuffled order does not), and the loader
hints the kernel about each batch before its threads read it."""

import os

import numpy as np
import pytest

from medshard.loaders import Augment2D, build_loader
from medshard.loaders.partition import rank_batches
from medshard.loaders.readahead import ReadAhead, byte_runs
from medshard.shards.reader import open_dataset

# 10 samples in 2 shards, each sample 1000 bytes, back to back
SHARDS = np.array([0] * 6 + [1] * 4)
OFFSETS = np.array([0, 1000, 2000, 3000, 4000, 5000, 0, 1000, 2000, 3000])
SIZES = np.full(10, 1000)


# the same layout with samples a megabyte apart: far beyond the kernel's own readahead of
# the page a probe misses, so that what the tests leave out of the page cache stays out
KB = 1024
BIG_OFFSETS, BIG_SIZES = OFFSETS * KB, SIZES * KB


def evict(path) -> None:
    """Drop `path` from the page cache (written back first), or skip the test on a file
    system that keeps it there (tmpfs): a probe's one byte read that never waits says."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.preadv(fd, [bytearray(1)], os.fstat(fd).st_size - 1, os.RWF_NOWAIT)
    except BlockingIOError:
        return  # out of the page cache
    except OSError:  # tmpfs: no read that never waits
        pass
    finally:
        os.close(fd)
    pytest.skip("this file system keeps files in the page cache")


def shard_files(tmp_path) -> list[str]:
    names = ["a.tar", "b.tar"]
    for name in names:
        (tmp_path / name).write_bytes(bytes(6000 * KB))
    return names


def test_samples_in_shard_order_merge_into_one_run_per_shard():
    assert byte_runs(SHARDS, OFFSETS, SIZES, range(10)) == [(0, 0, 6000), (1, 0, 4000)]


def test_samples_apart_stay_apart_unless_within_the_gap():
    assert byte_runs(SHARDS, OFFSETS, SIZES, [4, 0, 2]) == [
        (0, 0, 1000),
        (0, 2000, 3000),
        (0, 4000, 5000),
    ]
    assert byte_runs(SHARDS, OFFSETS, SIZES, [4, 0, 2], gap=1000) == [(0, 0, 5000)]
    assert byte_runs(SHARDS, OFFSETS, SIZES, [5, 6]) == [(0, 5000, 6000), (1, 0, 1000)]
    assert byte_runs(SHARDS, OFFSETS, SIZES, []) == []


@pytest.mark.parametrize("seed", range(5))
def test_runs_cover_exactly_the_bytes_of_the_samples_asked(seed):
    chosen = np.random.default_rng(seed).choice(10, size=5, replace=False)
    runs = byte_runs(SHARDS, OFFSETS, SIZES, chosen)
    covered = {(s, o) for s, a, b in runs for o in range(a, b, 1000)}
    assert covered == {(int(SHARDS[i]), int(OFFSETS[i])) for i in chosen}


def test_hints_go_a_window_ahead_of_the_batch_delivered(monkeypatch, tmp_path):
    hinted = []
    names = shard_files(tmp_path)
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, start, size, advice: hinted.append(start))
    monkeypatch.setattr(ReadAhead, "_cached", lambda self, sample: False)  # a cold cache
    batches = rank_batches(10, 0, 0, 0, 1, 2, shuffle=False)  # [0, 1], [2, 3], ...
    ahead = ReadAhead(tmp_path, names, SHARDS, BIG_OFFSETS, BIG_SIZES, batches, 2)
    ahead.advance(-1)
    assert hinted == [0] and ahead.hinted == 2  # batches 0 and 1: one run, from 0
    ahead.advance(0)
    assert hinted == [0, 4000 * KB] and ahead.hinted == 3  # batch 2: samples 4, 5
    ahead.advance(0)
    assert ahead.hinted == 3  # nothing twice
    ahead.advance(10)
    assert hinted == [0, 4000 * KB, 0] and ahead.hinted == 5  # batches 3 and 4 in shard b
    ahead.close()


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="reads that never wait are Linux's")
def test_batches_already_in_the_page_cache_are_not_hinted(monkeypatch, tmp_path):
    names = shard_files(tmp_path)
    for name in names:
        (tmp_path / name).read_bytes()  # in the page cache
    evict(tmp_path / "b.tar")
    hinted = []
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, start, size, advice: hinted.append((fd, start))
    )
    batches = rank_batches(10, 0, 0, 0, 1, 2, shuffle=False)  # [0, 1], [2, 3], ...
    ahead = ReadAhead(tmp_path, names, SHARDS, BIG_OFFSETS, BIG_SIZES, batches, 10)
    ahead.advance(-1)
    # batches 0-2 lie in a.tar, which is cached; batches 3 (6, 7) and 4 (8, 9) in b.tar
    assert [start for _, start in hinted] == [0] and ahead.hinted == 5
    assert {fd for fd, _ in hinted} == {ahead._fd(1)}
    ahead.close()


def test_the_loader_hints_each_shard_in_runs_in_evaluation_order(monkeypatch, mixed_tile_dataset):
    monkeypatch.setattr(ReadAhead, "_cached", lambda self, sample: False)  # a cold cache
    hints = []
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, start, size, advice: hints.append((start, size))
    )
    loader = build_loader(
        mixed_tile_dataset,
        "val",
        batch_size=2,
        backend="torch",
        training=False,
        augment=Augment2D(normalize="none"),
    )
    keys = [key for batch in loader for key in batch["key"]]
    rows = [r for r in open_dataset(mixed_tile_dataset).manifest.to_pylist() if r["split"] == "val"]
    assert len(keys) == len(rows) == 9
    total = sum(r["bytes"] for r in rows)
    assert sum(size for _, size in hints) == total  # every byte once
    assert len(hints) < len(rows)  # neighbours read as one run
