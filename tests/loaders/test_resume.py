"""Mid-epoch resume of both backends on real tiles. A state saved at a random batch by W
ranks resumes on W' ranks, and together they read every sample of the epoch exactly
once; resumed on the same ranks, the rest comes out as it would have (DALI restores its
own checkpoint, so its random draws are the same too)."""

import random
from collections import Counter

import pytest
import torch

from medshard.errors import DatasetError
from medshard.loaders import Augment2D, build_loader, dali_available

AUGMENT = Augment2D(flip_h=True, flip_v=True, brightness=0.2, contrast=0.2)
BACKENDS = [
    "torch",
    pytest.param(
        "dali", marks=pytest.mark.skipif(not dali_available(), reason="DALI is Linux only")
    ),
]
EPOCH = 1
# (ranks, batch per rank) before and after: the same global batch, and two that differ
TOPOLOGIES = [
    ((2, 4), (1, 8)),
    ((1, 4), (2, 2)),
    ((2, 3), (3, 2)),
    ((4, 2), (2, 4)),
    ((3, 2), (2, 5)),
]


def make(ds, backend: str, rank: int, world_size: int, batch_size: int):
    loader = build_loader(
        ds,
        "train",
        backend=backend,
        device="cpu",
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=4,
        augment=AUGMENT,
        num_workers=0,
    )
    loader.set_epoch(EPOCH)
    return loader


def interrupted(ds, backend, world_size, batch_size, done):
    """Each rank takes `done` batches; the keys read and each rank's saved state."""
    keys, states = [], []
    for rank in range(world_size):
        loader = make(ds, backend, rank, world_size, batch_size)
        batches = iter(loader)
        for _ in range(done):
            keys += next(batches)["key"]
        states.append(loader.state_dict())
        batches.close()
    return keys, states


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("before", "after"), TOPOLOGIES)
def test_an_epoch_resumed_on_other_ranks_reads_each_sample_exactly_once(
    image_dataset, backend, before, after
):
    (ranks, batch), (resumed_ranks, resumed_batch) = before, after
    batches = len(make(image_dataset, "torch", 0, ranks, batch))
    done = random.Random(f"{before}{after}").randrange(1, batches)  # a reproducible kill point
    keys, states = interrupted(image_dataset, backend, ranks, batch, done)
    position = states[0]["position"]
    assert {s["position"] for s in states} == {done * batch * ranks}
    assert len(keys) == position
    for rank in range(resumed_ranks):
        loader = make(image_dataset, backend, rank, resumed_ranks, resumed_batch)
        loader.load_state_dict(states[min(rank, ranks - 1)])
        count = len(loader)  # what is left of the epoch
        rest = list(loader)
        assert len(rest) == count
        keys += [k for b in rest for k in b["key"]]
    counts = Counter(keys)
    assert len(counts) == 24  # every training sample
    padding = -(24 - position) % resumed_ranks  # ranks stay even: a few wrap around
    assert sum(counts.values()) == 24 + padding and max(counts.values()) <= 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_resumed_on_the_same_ranks_the_rest_is_what_it_would_have_been(image_dataset, backend):
    ranks, batch = 2, 3
    whole = [list(make(image_dataset, backend, r, ranks, batch)) for r in range(ranks)]
    for done in random.Random(14).sample(range(1, len(whole[0])), 2):
        _, states = interrupted(image_dataset, backend, ranks, batch, done)
        for rank, state in enumerate(states):
            loader = make(image_dataset, backend, rank, ranks, batch)
            loader.load_state_dict(state)
            rest = list(loader)
            expected = whole[rank][done:]
            assert [b["key"] for b in rest] == [b["key"] for b in expected]
            for got, want in zip(rest, expected):  # the same augmentation draws
                assert torch.equal(got["image"], want["image"]), (backend, done, rank)


@pytest.mark.skipif(not dali_available(), reason="DALI is Linux only")
def test_dali_keeps_its_checkpoint_to_its_own_rank_and_batch_size(image_dataset):
    _, states = interrupted(image_dataset, "dali", 2, 3, 2)
    own = states[1]["rank_state"]
    assert (own["rank"], own["world_size"], own["position"]) == (1, 2, 12) and own["dali"]
    whole = list(make(image_dataset, "dali", 1, 2, 3))
    # rank 0 does not take rank 1's checkpoint: the same samples, its own fresh draws
    loader = make(image_dataset, "dali", 0, 2, 3)
    loader.load_state_dict(states[1])
    assert loader._restore is None
    assert [b["key"] for b in loader] == [
        b["key"] for b in list(make(image_dataset, "dali", 0, 2, 3))
    ][2:]
    loader = make(image_dataset, "dali", 1, 2, 3)
    loader.load_state_dict(states[1])
    assert [b["key"] for b in loader] == [b["key"] for b in whole[2:]]


def test_a_state_without_a_global_position_is_refused(image_dataset):
    loader = make(image_dataset, "torch", 0, 1, 4)
    old = {k: v for k, v in loader.state_dict().items() if k != "position"} | {"batches": 2}
    with pytest.raises(DatasetError, match="cannot resume from a loader state without a global"):
        loader.load_state_dict(old)


def test_a_position_past_the_split_is_refused(image_dataset):
    loader = make(image_dataset, "torch", 0, 1, 4)
    with pytest.raises(DatasetError, match="cannot resume from position 30, past the 24 samples"):
        loader.load_state_dict(loader.state_dict() | {"position": 30})


def test_the_state_of_a_finished_pass_starts_the_epoch_again(image_dataset):
    loader = make(image_dataset, "torch", 0, 2, 4)
    list(loader)
    assert loader.state_dict()["position"] == 0 and len(loader) == 3
