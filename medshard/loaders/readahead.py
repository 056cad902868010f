"""Reads ahead of an epoch's plan: the batches a rank will read are known before the first
one is (loaders/partition.py), so the byte ranges of the next few batches are handed to
the kernel (`posix_fadvise(WILLNEED)`), which reads them into the page cache while the
loader works on earlier ones. Samples that lie next to each other in a shard (a plan in
shard order, as evaluation reads) merge into one range, so a cold page cache is read in
whole runs of a shard instead of one small read per sample. A sample already in the page
cache (a one-byte read that never waits says so, for a few microseconds) is not hinted: a
hint costs the kernel a walk over every page it names, which on a warm cache cost a fifth
of a fast loader's time.

A dataset at an s3:// URL is fetched ahead instead (`FetchAhead`): one background thread
hands the next batches' samples to the dataset's cache (`Mirror.prefetch`: the whole
shards of a split that fits in the cache and the Zarr groups of volumes and videos, as
far as half the cache holds and only into free room, since a fetch ahead never evicts;
the byte ranges of a split read by range, into memory), so that a sample's thread finds
its bytes there. A limit is never waited on: what does not fit is fetched by the
sample's own read when its turn comes (by byte range where the cache has no room).

`byte_runs` is a pure function of integers; `ReadAhead` only issues the hints."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medshard.shards.open_files import OpenFiles

__all__ = ["FetchAhead", "ReadAhead", "byte_runs"]

log = logging.getLogger(__name__)


def byte_runs(
    shards: np.ndarray,
    offsets: np.ndarray,
    sizes: np.ndarray,
    indices: Sequence[int] | np.ndarray,
    gap: int = 0,
) -> list[tuple[int, int, int]]:
    """(shard, start, stop) byte ranges that cover samples `indices` (sample i lies in
    shard `shards[i]` at `offsets[i]`, `sizes[i]` bytes), sorted by shard and start;
    samples of one shard less than `gap` bytes apart share a range."""
    chosen = np.unique(np.asarray(indices, np.int64))
    if not len(chosen):
        return []
    shard, start = shards[chosen], offsets[chosen]
    order = np.lexsort((start, shard))
    shard, start, stop = shard[order], start[order], start[order] + sizes[chosen][order]
    # one line of bytes with the shards far apart, so that no run crosses into the next
    lane = (int(stop.max()) + gap + 1) * shard
    reach = np.maximum.accumulate(stop + lane)  # the end of everything before
    new = np.ones(len(start), bool)
    new[1:] = start[1:] + lane[1:] > reach[:-1] + gap
    firsts = np.flatnonzero(new)
    ends = np.maximum.reduceat(stop + lane, firsts) - lane[firsts]
    return [(int(shard[f]), int(start[f]), int(e)) for f, e in zip(firsts, ends)]


class ReadAhead:
    """Hints for the batches of one pass over `batches`: `advance(b)` (batch b is being
    delivered) hints every batch up to b + `window` not hinted yet. Shard i is the file
    `root / names[i]`; hints are skipped where the platform has no posix_fadvise."""

    def __init__(
        self,
        root: str | Path,
        names: Sequence[str],
        shards: np.ndarray,
        offsets: np.ndarray,
        sizes: np.ndarray,
        batches: list[np.ndarray],
        window: int,
    ):
        self.root, self.names = Path(root), list(names)
        self.shards, self.offsets, self.sizes = shards, offsets, sizes
        self.batches, self.window = batches, window
        self.hinted = 0  # batches hinted so far
        self._files = OpenFiles()
        self.enabled = hasattr(os, "posix_fadvise")
        self._probe = bytearray(1)

    def advance(self, batch: int) -> None:
        """Hint the samples of the batches up to `batch` + window (-1: the first window)
        that are not in the page cache already."""
        upto = min(batch + 1 + self.window, len(self.batches))
        if upto <= self.hinted:
            return
        batches, self.hinted = self.batches[self.hinted : upto], upto
        if not self.enabled:
            return
        cold = [int(i) for b in batches for i in b if not self._cached(int(i))]
        for shard, start, stop in byte_runs(self.shards, self.offsets, self.sizes, cold):
            with contextlib.suppress(OSError):  # a hint that fails costs nothing
                os.posix_fadvise(self._fd(shard), start, stop - start, os.POSIX_FADV_WILLNEED)

    def _cached(self, sample: int) -> bool:
        """Whether the middle byte of `sample` is in the page cache: a read of one byte
        that never waits for the disk (False where the platform cannot tell)."""
        if not hasattr(os, "RWF_NOWAIT"):
            return False
        middle = int(self.offsets[sample] + self.sizes[sample] // 2)
        try:
            os.preadv(self._fd(int(self.shards[sample])), [self._probe], middle, os.RWF_NOWAIT)
        except OSError:  # BlockingIOError: on disk only; or no way to tell (the read says why)
            return False
        return True

    def _fd(self, shard: int) -> int:
        return self._files.fd(shard, self.root / self.names[shard])

    def close(self) -> None:
        self._files.close()


class FetchAhead:
    """`advance(b)` (batch b is being delivered) hands the samples of every batch up to
    b + `window` not handed yet to `fetch(indices)` in one background thread (a dataset's
    or a mirror's `prefetch(..., ahead=True)`). A fetch that fails costs nothing but a log
    line: the sample's own read fetches it again, and raises if the store is really gone."""

    def __init__(
        self,
        fetch: Callable[[np.ndarray], object],
        batches: list[np.ndarray],
        window: int,
        where: str,
    ):
        self.fetch, self.batches, self.window, self.where = fetch, batches, window, where
        self.hinted = 0  # batches handed over so far
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="medshard-fetch-ahead")

    def advance(self, batch: int) -> None:
        """Fetch the batches up to `batch` + window (-1: the first window)."""
        upto = min(batch + 1 + self.window, len(self.batches))
        if upto <= self.hinted:
            return
        self._pool.submit(self._fetch, np.concatenate(self.batches[self.hinted : upto]))
        self.hinted = upto

    def _fetch(self, indices: np.ndarray) -> None:
        try:
            self.fetch(indices)
        except Exception as exc:  # a fetch ahead is a hint: the sample's read retries
            log.debug("fetch ahead of %s failed: %s", self.where, exc)

    def close(self) -> None:
        """Stop: fetches not started are dropped, and the one under way is waited for, so
        that a pass leaves nothing writing into the cache behind it."""
        self._pool.shutdown(wait=True, cancel_futures=True)
