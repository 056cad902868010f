"""Which samples a rank and a worker read: pure functions of integers that return indices.

An epoch's order is a permutation of all samples drawn from (seed, epoch); or, with a
shuffle by shards (`window`), the shards' order is drawn and each run of `window` shards
in it has its samples shuffled among themselves, so that an epoch reads a few shards at a
time: what a cache of a dataset at a URL fetches whole, then lets go (MosaicML
Streaming's block shuffle, LitData's chunk shuffle; a Zarr volume or video counts as a
shard). Rank r of W
takes every W-th sample of it. Three policies for the N mod W samples left over:
`drop` drops them and `pad` wraps around to the first samples again, so every rank holds
the same count (training: ranks step together); `uneven` gives them to the first ranks,
whose counts then differ by at most one, so that every sample is read exactly once
(evaluation: no duplicate enters a metric).
A resumed epoch starts at a global position: the first `start` samples of the epoch's
order have been read (by any number of ranks), and the rest is shared out the same way
among the ranks of the resumed run, however many there are. While ranks step together,
batch b of every rank together read the samples b × batch × ranks onwards, so the
position after b batches is a plain count (`position_after`).
A rank's samples are cut into batches. The DataLoader collects from its K workers in
turn, starting at worker 0, so batch `skip + j` goes to worker j mod K: a resumed pass
that starts at batch `skip` still comes out in plan order.
Both backends read this plan: DALI is fed it (loaders/dali_feed.py).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "Uneven",
    "epoch_order",
    "rank_count",
    "rank_indices",
    "rank_batches",
    "position_after",
    "worker_batches",
    "num_batches",
    "batch_sizes",
]

Uneven = Literal["drop", "pad", "uneven"]


def epoch_order(
    num_samples: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    shards: np.ndarray | None = None,
    window: int | None = None,
) -> np.ndarray:
    """All sample indices in this epoch's order; with `window`, shuffled by runs of that
    many shards (`shards`: a number or name for the shard of each sample)."""
    if not shuffle:
        return np.arange(num_samples)
    rng = np.random.default_rng([seed, epoch])
    if window is None:
        return rng.permutation(num_samples)
    if shards is None or len(shards) != num_samples or window < 1:
        raise ValueError(f"a shuffle by {window} shards needs the shard of each sample")
    names, shard = np.unique(shards, return_inverse=True)  # numbered 0.. without gaps
    place = np.empty(len(names), np.int64)
    place[rng.permutation(len(names))] = np.arange(len(names))  # each shard's place
    return np.lexsort((rng.random(num_samples), place[shard] // window))


def _check_rank(rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")


def _check_start(start: int, num_samples: int) -> None:
    if not 0 <= start <= num_samples:
        raise ValueError(f"position {start} is outside an epoch of {num_samples} samples")


def rank_count(
    num_samples: int, rank: int, world_size: int, uneven: Uneven = "pad", *, start: int = 0
) -> int:
    """How many samples rank `rank` of `world_size` reads in an epoch, from position
    `start` on."""
    _check_rank(rank, world_size)
    _check_start(start, num_samples)
    rest = num_samples - start
    if uneven == "drop":
        return rest // world_size
    if uneven == "pad":
        return -(-rest // world_size)
    return rest // world_size + (rank < rest % world_size)


def rank_indices(
    num_samples: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    *,
    shuffle: bool = True,
    uneven: Uneven = "pad",
    start: int = 0,
    shards: np.ndarray | None = None,
    window: int | None = None,
) -> np.ndarray:
    """The samples rank `rank` of `world_size` reads in this epoch, in order, from global
    position `start` on (0: the whole epoch); `shards`, `window` as `epoch_order`."""
    _check_rank(rank, world_size)
    _check_start(start, num_samples)
    order = epoch_order(num_samples, seed, epoch, shuffle, shards, window)
    rest = order[start:]
    if uneven == "drop":
        rest = rest[: len(rest) - len(rest) % world_size]
    elif uneven == "pad":  # wraps around to the epoch's first samples again
        rest = np.concatenate([rest, np.resize(order, -len(rest) % world_size)])
    return rest[rank::world_size]


def num_batches(per_rank: int, batch_size: int, drop_last: bool) -> int:
    """How many batches a rank's `per_rank` samples make."""
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


def batch_sizes(per_rank: int, batch_size: int, drop_last: bool) -> list[int]:
    """The size of each of a rank's batches: full ones, then the rest unless `drop_last`."""
    full, rest = divmod(per_rank, batch_size)
    return [batch_size] * full + ([rest] if rest and not drop_last else [])


def rank_batches(
    num_samples: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    batch_size: int,
    *,
    shuffle: bool = True,
    uneven: Uneven = "pad",
    drop_last: bool = False,
    start: int = 0,
    shards: np.ndarray | None = None,
    window: int | None = None,
) -> list[np.ndarray]:
    """The rank's batches of sample indices from global position `start` on, in plan
    order."""
    indices = rank_indices(
        num_samples,
        seed,
        epoch,
        rank,
        world_size,
        shuffle=shuffle,
        uneven=uneven,
        start=start,
        shards=shards,
        window=window,
    )
    count = num_batches(len(indices), batch_size, drop_last)
    return [indices[b * batch_size : (b + 1) * batch_size] for b in range(count)]


def position_after(
    num_samples: int, start: int, world_size: int, batch_size: int, done: int, batches: int
) -> int:
    """The global position once every rank has taken `done` of the `batches` batches of a
    pass that started at `start`: a finished pass has read the whole epoch; before that,
    each batch of each rank is full, so the ranks have read a prefix of the rest."""
    _check_start(start, num_samples)
    if done >= batches:
        return num_samples
    return min(start + done * batch_size * world_size, num_samples)


def worker_batches(
    batches: list[np.ndarray], worker: int, workers: int, skip: int = 0
) -> list[tuple[int, np.ndarray]]:
    """(batch number, indices) that one DataLoader worker produces in a pass that starts
    at batch `skip` (mid-epoch resume): batch `skip + j` goes to worker j mod `workers`."""
    return [(b, batches[b]) for b in range(skip, len(batches)) if (b - skip) % workers == worker]
