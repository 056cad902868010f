"""Which samples a rank and a worker read: pure functions of integers that return indices.

An epoch's order is a permutation of all samples drawn from (seed, epoch). Rank r of W
takes every W-th sample of it. Three policies for the N mod W samples left over:
`drop` drops them and `pad` wraps around to the first samples again, so every rank holds
the same count (training: ranks step together); `uneven` gives them to the first ranks,
whose counts then differ by at most one, so that every sample is read exactly once
(evaluation: no duplicate enters a metric).
A rank's samples are cut into batches. The DataLoader collects from its K workers in
turn, starting at worker 0, so batch `skip + j` goes to worker j mod K: a resumed pass
that starts at batch `skip` still comes out in plan order.
The DALI reader instead cuts the dataset into W contiguous shards (`dali_shard`), and
rank r reads shard (r + epoch) mod W (`dali_reader_shard`).
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
    "worker_batches",
    "num_batches",
    "batch_sizes",
    "dali_shard",
    "dali_reader_shard",
    "dali_rank_count",
]

Uneven = Literal["drop", "pad", "uneven"]


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """All sample indices in this epoch's order."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def _check_rank(rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")


def rank_count(num_samples: int, rank: int, world_size: int, uneven: Uneven = "pad") -> int:
    """How many samples rank `rank` of `world_size` reads in an epoch."""
    _check_rank(rank, world_size)
    if uneven == "drop":
        return num_samples // world_size
    if uneven == "pad":
        return -(-num_samples // world_size)
    return num_samples // world_size + (rank < num_samples % world_size)


def rank_indices(
    num_samples: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    *,
    shuffle: bool = True,
    uneven: Uneven = "pad",
) -> np.ndarray:
    """The samples rank `rank` of `world_size` reads in this epoch, in order."""
    _check_rank(rank, world_size)
    order = epoch_order(num_samples, seed, epoch, shuffle)
    if uneven == "drop":
        order = order[: num_samples - num_samples % world_size]
    elif uneven == "pad":
        per_rank = -(-num_samples // world_size)
        order = np.resize(order, per_rank * world_size)  # wraps: the first samples again
    return order[rank::world_size]


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
) -> list[np.ndarray]:
    """The rank's batches of sample indices, in plan order."""
    indices = rank_indices(
        num_samples, seed, epoch, rank, world_size, shuffle=shuffle, uneven=uneven
    )
    count = num_batches(len(indices), batch_size, drop_last)
    return [indices[b * batch_size : (b + 1) * batch_size] for b in range(count)]


def worker_batches(
    batches: list[np.ndarray], worker: int, workers: int, skip: int = 0
) -> list[tuple[int, np.ndarray]]:
    """(batch number, indices) that one DataLoader worker produces in a pass that starts
    at batch `skip` (mid-epoch resume): batch `skip + j` goes to worker j mod `workers`."""
    return [(b, batches[b]) for b in range(skip, len(batches)) if (b - skip) % workers == worker]


def dali_shard(num_samples: int, shard: int, shards: int) -> range:
    """The samples (in stored order) of shard `shard` of `shards` as DALI's readers cut
    them: contiguous, sizes differing by at most one."""
    _check_rank(shard, shards)
    return range(num_samples * shard // shards, num_samples * (shard + 1) // shards)


def dali_reader_shard(rank: int, world_size: int, epoch: int) -> int:
    """The DALI reader shard that rank `rank` reads in `epoch`: it moves with the epoch,
    so that shuffling within a shard still lets every rank see every sample over time."""
    _check_rank(rank, world_size)
    return (rank + epoch) % world_size


def dali_rank_count(
    num_samples: int, rank: int, world_size: int, epoch: int, uneven: Uneven = "pad"
) -> int:
    """How many samples a rank of the DALI backend yields in an epoch: its reader shard's,
    or with `drop` and `pad` the same count on every rank."""
    if uneven != "uneven":
        return rank_count(num_samples, rank, world_size, uneven)
    shard = dali_reader_shard(rank, world_size, epoch)
    return len(dali_shard(num_samples, shard, world_size))
