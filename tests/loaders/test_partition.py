"""Which samples each rank and worker reads, for many simulated topologies, no processes."""

from collections import Counter

import numpy as np
import pytest

from medshard.loaders.partition import (
    batch_sizes,
    epoch_order,
    num_batches,
    position_after,
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


# 7 shards of uneven sizes (3 to 9 samples), 42 samples in shard order
SHARD_OF = np.repeat(np.arange(7), [6, 3, 9, 5, 7, 4, 8])


@pytest.mark.parametrize("window", [1, 2, 3, 7])
def test_a_shuffle_by_shards_reads_a_window_of_shards_at_a_time(window):
    order = epoch_order(42, 5, 2, shards=SHARD_OF, window=window)
    assert sorted(order.tolist()) == list(range(42))  # every sample once
    read = SHARD_OF[order]
    first = {int(s): int(np.flatnonzero(read == s)[0]) for s in range(7)}
    last = {int(s): int(np.flatnonzero(read == s)[-1]) for s in range(7)}
    by_start = sorted(first, key=first.get)
    windows = [by_start[k : k + window] for k in range(0, 7, window)]
    # a window's shards are read before any shard of the next one starts
    for done, next_one in zip(windows, windows[1:]):
        assert max(last[s] for s in done) < min(first[s] for s in next_one)
    if window > 1:  # within a window, the shards' samples are mixed, not one after another
        assert len(np.flatnonzero(np.diff(read))) > 6


def test_a_shuffle_by_shards_is_a_function_of_seed_and_epoch():
    def order(seed, epoch):
        return epoch_order(42, seed, epoch, shards=SHARD_OF, window=2)

    assert np.array_equal(order(5, 2), order(5, 2))
    assert not np.array_equal(order(5, 2), order(5, 3))
    assert not np.array_equal(order(5, 2), order(6, 2))
    first_shards = {int(SHARD_OF[order(5, e)[0]]) for e in range(20)}
    assert len(first_shards) > 3  # the shards' order is drawn anew each epoch
    # shards are told apart, not counted: numbers with gaps give the same order
    assert np.array_equal(epoch_order(42, 5, 2, shards=SHARD_OF * 7, window=2), order(5, 2))
    with pytest.raises(ValueError, match="needs the shard of each sample"):
        epoch_order(42, 5, 2, window=2)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_of_a_shuffle_by_shards_read_each_sample_exactly_once(world_size):
    seen = Counter()
    for rank in range(world_size):
        for batch in rank_batches(
            42, 1, 0, rank, world_size, 4, uneven="uneven", shards=SHARD_OF, window=2
        ):
            seen.update(batch.tolist())
    assert sorted(seen) == list(range(42)) and set(seen.values()) == {1}


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


def read_before(num_samples, seed, epoch, world_size, batch_size, done, uneven, drop_last=False):
    """The samples the ranks of a run read in its first `done` batches, and the position
    that run would save."""
    plans = [
        rank_batches(
            num_samples, seed, epoch, r, world_size, batch_size, uneven=uneven, drop_last=drop_last
        )
        for r in range(world_size)
    ]
    read = [i for plan in plans for batch in plan[:done] for i in batch.tolist()]
    position = position_after(num_samples, 0, world_size, batch_size, done, len(plans[0]))
    return read, position


@pytest.mark.parametrize("num_samples", [1, 10, 37, 64])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("uneven", ["pad", "drop"])
def test_an_epoch_resumed_on_any_world_size_reads_each_sample_exactly_once(
    num_samples, world_size, uneven
):
    """A run of `world_size` ranks saves its position after `done` batches; a run of any
    other size reads the rest: together, the epoch's samples once each (with `drop`, less
    the few that do not divide among the resumed ranks; with `pad`, plus the few that
    wrap around to the epoch's first samples)."""
    order = epoch_order(num_samples, 3, 1).tolist()
    for batch_size in (1, 3, 4):
        count = num_batches(rank_count(num_samples, 0, world_size, uneven), batch_size, False)
        for done in range(count):
            read, position = read_before(num_samples, 3, 1, world_size, batch_size, done, uneven)
            assert sorted(read) == sorted(order[:position])  # a prefix of the epoch's order
            for resumed in (1, 2, 3, 5, 8):
                rest = [
                    i
                    for r in range(resumed)
                    for i in rank_indices(
                        num_samples, 3, 1, r, resumed, uneven=uneven, start=position
                    ).tolist()
                ]
                left = num_samples - position
                if uneven == "drop":
                    kept = order[position : num_samples - left % resumed]
                    assert sorted(read + rest) == sorted(order[:position] + kept)
                else:
                    counts = Counter(read + rest)
                    assert set(counts) == set(order) and len(read + rest) == position + len(rest)
                    wrapped = -left % resumed
                    assert sum(counts.values()) - num_samples == wrapped
                    assert all(counts[i] == 1 for i in order[wrapped:])


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("num_samples", [9, 24, 37])
@pytest.mark.parametrize("uneven", ["pad", "drop", "uneven"])
def test_resuming_on_the_same_ranks_yields_the_rest_of_each_ranks_plan(
    num_samples, world_size, uneven
):
    for batch_size in (1, 2, 5):
        plans = [
            rank_batches(num_samples, 7, 2, r, world_size, batch_size, uneven=uneven)
            for r in range(world_size)
        ]
        # uneven ranks step together only while each still has a batch
        for done in range(min(len(p) for p in plans)):
            position = position_after(num_samples, 0, world_size, batch_size, done, len(plans[0]))
            for rank, plan in enumerate(plans):
                rest = rank_batches(
                    num_samples, 7, 2, rank, world_size, batch_size, uneven=uneven, start=position
                )
                assert [b.tolist() for b in rest] == [b.tolist() for b in plan[done:]]
                count = rank_count(num_samples, rank, world_size, uneven, start=position)
                assert count == sum(len(b) for b in rest)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((2, 4, 1), (1, 4, 2)),
        ((1, 4, 2), (2, 4, 1)),
        ((4, 2, 1), (2, 2, 2)),
        ((2, 4, 1), (1, 8, 1)),
    ],
)
def test_with_the_same_global_batch_each_optimizer_step_takes_the_same_samples(before, after):
    """(ranks, batch per rank, accumulation): an optimizer step of the resumed run takes
    the samples that step would have taken in the run that was interrupted."""

    def steps(ranks, batch, accumulate, start):
        plans = [rank_batches(64, 0, 5, r, ranks, batch, start=start) for r in range(ranks)]
        micro = [
            sorted(i for plan in plans for i in plan[b].tolist()) for b in range(len(plans[0]))
        ]
        return [
            sorted(sum(micro[s : s + accumulate], [])) for s in range(0, len(micro), accumulate)
        ]

    whole = steps(*before, start=0)
    ranks, batch, accumulate = before
    for done in range(0, len(whole)):
        position = done * ranks * batch * accumulate
        assert steps(*after, start=position) == whole[done:]


def test_the_position_after_a_finished_pass_is_the_end_of_the_epoch():
    # 10 samples over 4 ranks, padded to 3 each: after the last batch the epoch is read
    assert position_after(10, 0, 4, 2, 1, 2) == 8
    assert position_after(10, 0, 4, 2, 2, 2) == 10
    assert position_after(10, 6, 2, 1, 1, 2) == 8


def test_a_position_outside_the_epoch_is_refused():
    with pytest.raises(ValueError, match="position 11 is outside an epoch of 10 samples"):
        rank_indices(10, 0, 0, 0, 2, start=11)
    with pytest.raises(ValueError, match="position -1 is outside an epoch of 10 samples"):
        rank_count(10, 0, 2, start=-1)
