"""Which samples each rank and worker reads, for many simulated topologies, no processes."""

from collections import Counter

import numpy as np
import pytest

from medshard.loaders.partition import (
    batch_sizes,
    dali_rank_count,
    dali_reader_shard,
    dali_shard,
    epoch_order,
    num_batches,
    rank_batches,
    rank_count,
    rank_indices,
    worker_batches,
)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("num_samples", [1, 10, 37, 64])
def test_ranks_and_workers_yield_each_sample_exactly_once(num_samples, world_size, workers):
    seen = Counter()
    counts = set()
    for rank in range(world_size):
        batches = rank_batches(num_samples, 0, 3, rank, world_size, 4, uneven="drop")
        counts.add(len(batches))
        for worker in range(workers):
            for _, batch in worker_batches(batches, worker, workers):
                seen.update(batch.tolist())
    kept = num_samples - num_samples % world_size
    assert sum(seen.values()) == kept and all(v == 1 for v in seen.values())
    assert len(counts) == 1  # every rank yields the same number of batches


def test_pad_wraps_so_every_sample_is_read_and_ranks_stay_even():
    per_rank = [rank_indices(10, 1, 0, r, 4, uneven="pad") for r in range(4)]
    assert {len(p) for p in per_rank} == {3}
    everything = np.concatenate(per_rank)
    assert set(everything.tolist()) == set(range(10)) and len(everything) == 12


def test_order_is_a_function_of_seed_and_epoch():
    assert np.array_equal(epoch_order(100, 5, 2), epoch_order(100, 5, 2))
    assert not np.array_equal(epoch_order(100, 5, 2), epoch_order(100, 5, 3))
    assert not np.array_equal(epoch_order(100, 5, 2), epoch_order(100, 6, 2))
    assert np.array_equal(epoch_order(10, 5, 2, shuffle=False), np.arange(10))


def test_workers_take_batches_round_robin_and_skip_for_resume():
    batches = rank_batches(40, 0, 0, 0, 1, 4)
    assert [b for b, _ in worker_batches(batches, 1, 3)] == [1, 4, 7]
    assert [b for b, _ in worker_batches(batches, 1, 3, skip=5)] == [6, 9]


def collected(batches, workers: int, skip: int) -> list[int]:
    """Batch numbers in the order a DataLoader collects them: one from each worker in turn,
    from worker 0, leaving out a worker once it has nothing more."""
    queues = [[b for b, _ in worker_batches(batches, w, workers, skip)] for w in range(workers)]
    out: list[int] = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
@pytest.mark.parametrize("num_batches", [1, 2, 5, 8])
def test_a_resumed_pass_comes_out_in_plan_order_at_every_batch(workers, num_batches):
    batches = rank_batches(num_batches * 3 - 1, 0, 1, 0, 1, 3)
    assert len(batches) == num_batches
    for skip in range(num_batches + 1):
        assert collected(batches, workers, skip) == list(range(skip, num_batches))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7, 16])
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("num_samples", [1, 10, 37, 64])
def test_uneven_counts_every_sample_exactly_once_over_ranks(num_samples, world_size, workers):
    for epoch, shuffle in ((0, False), (3, True)):
        seen = Counter()
        for rank in range(world_size):
            batches = rank_batches(
                num_samples, 5, epoch, rank, world_size, 4, shuffle=shuffle, uneven="uneven"
            )
            for worker in range(workers):
                for _, batch in worker_batches(batches, worker, workers):
                    seen.update(batch.tolist())
        assert sorted(seen) == list(range(num_samples)) and set(seen.values()) == {1}
    counts = [rank_count(num_samples, r, world_size, "uneven") for r in range(world_size)]
    assert sum(counts) == num_samples and max(counts) - min(counts) <= 1


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("num_samples", [7, 10, 37])
@pytest.mark.parametrize("uneven", ["drop", "pad", "uneven"])
def test_rank_count_is_the_length_of_the_rank_indices(num_samples, world_size, uneven):
    for rank in range(world_size):
        indices = rank_indices(num_samples, 0, 2, rank, world_size, uneven=uneven)
        assert rank_count(num_samples, rank, world_size, uneven) == len(indices)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("num_samples", [7, 10, 37])
def test_dali_shards_cover_each_sample_once_in_every_epoch(num_samples, world_size):
    shards = [list(dali_shard(num_samples, s, world_size)) for s in range(world_size)]
    assert sum(shards, []) == list(range(num_samples))
    for epoch in range(3):
        counts = [
            dali_rank_count(num_samples, r, world_size, epoch, "uneven") for r in range(world_size)
        ]
        assert sum(counts) == num_samples and max(counts) - min(counts) <= 1


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_dali_ranks_read_every_shard_once_per_epoch_and_move_on(world_size):
    for epoch in range(4):
        shards = [dali_reader_shard(r, world_size, epoch) for r in range(world_size)]
        assert sorted(shards) == list(range(world_size))
    over_epochs = {dali_reader_shard(0, world_size, epoch) for epoch in range(world_size)}
    assert over_epochs == set(range(world_size))  # rank 0 visits every shard in turn


@pytest.mark.parametrize("per_rank", [0, 1, 7, 8, 9])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sizes_add_up_to_the_rank_count(per_rank, drop_last):
    sizes = batch_sizes(per_rank, 4, drop_last)
    assert len(sizes) == num_batches(per_rank, 4, drop_last)
    assert all(0 < s <= 4 for s in sizes) and sizes[:-1] == [4] * (len(sizes) - 1)
    assert sum(sizes) == (per_rank - per_rank % 4 if drop_last else per_rank)


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="outside a world of 2"):
        rank_indices(10, 0, 0, 2, 2)
