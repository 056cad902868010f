"""Which samples a rank and a worker read: pure functions of integers that return indices.

An epoch's order is a permutation of all samples drawn from (seed, epoch). Rank r of W
takes every W-th sample of it, so ranks are disjoint and each holds the same count: the
`drop` policy drops the last N mod W samples of the order, `pad` wraps around to fill.
A rank's samples are cut into batches; batch b goes to DataLoader worker b mod K, the
order in which a DataLoader collects them, so the batches come out in plan order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Uneven", "epoch_order", "rank_indices", "rank_batches", "worker_batches", "num_batches"]

Uneven = Literal["drop", "pad"]


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """All sample indices in this epoch's order."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


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
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    order = epoch_order(num_samples, seed, epoch, shuffle)
    if uneven == "drop":
        order = order[: num_samples - num_samples % world_size]
    else:
        per_rank = -(-num_samples // world_size)
        order = np.resize(order, per_rank * world_size)  # wraps: the first samples again
    return order[rank::world_size]


def num_batches(per_rank: int, batch_size: int, drop_last: bool) -> int:
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


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
    """(batch number, indices) that one DataLoader worker produces, skipping the first
    `skip` batches of the plan (mid-epoch resume)."""
    return [(b, batch) for b, batch in enumerate(batches) if b % workers == worker and b >= skip]
