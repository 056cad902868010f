"""The DALI backend (CPU-only pipelines) on real tiles: resume at every batch, each sample
exactly once over ranks in evaluation, seeds from SeedSequence."""

from collections import Counter

import numpy as np
import pytest
import torch

from medshard.loaders import Augment2D, build_loader, dali_available
from tests.loaders.test_torch_loader import AUGMENT, assert_same_batches, passes

pytestmark = pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only")


def dali(ds, split="val", **options):
    options = {"batch_size": 2, "augment": AUGMENT, **options}
    return build_loader(ds, split, backend="dali", device="cpu", **options)


@pytest.mark.parametrize("workers", [0, 1, 2, 3, 4])
def test_resume_after_every_batch_yields_exactly_the_rest(mixed_tile_dataset, workers):
    loader = dali(mixed_tile_dataset, seed=4, training=True, num_workers=workers)
    loader.set_epoch(3)
    expected, states = passes(loader)
    assert len(expected) == len(loader) == 5
    assert [len(b["key"]) for b in expected] == [2, 2, 2, 2, 1]  # no sample of the next epoch
    for done, state in enumerate(states):
        assert (state["epoch"], state["position"]) == (3, min(2 * done, 9))
        loader.load_state_dict(state)
        assert_same_batches(list(loader), expected[done:])


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("epoch", [0, 1])
def test_evaluation_ranks_read_each_sample_exactly_once(mixed_tile_dataset, world_size, epoch):
    seen = Counter()
    for rank in range(world_size):
        loader = dali(
            mixed_tile_dataset,
            uneven="uneven",
            training=False,
            rank=rank,
            world_size=world_size,
            augment=Augment2D(normalize="none"),
        )
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader)
        seen.update(key for batch in batches for key in batch["key"])
    assert len(seen) == 9 and set(seen.values()) == {1}


@pytest.mark.parametrize("uneven", ["pad", "drop"])
def test_training_ranks_yield_even_counts(mixed_tile_dataset, uneven):
    counts = [
        sum(len(b["key"]) for b in dali(mixed_tile_dataset, uneven=uneven, rank=r, world_size=2))
        for r in range(2)
    ]
    assert counts == ([5, 5] if uneven == "pad" else [4, 4])


def test_pipeline_seeds_come_from_seed_sequence(mixed_tile_dataset):
    loader = dali(mixed_tile_dataset, seed=7, rank=1, world_size=2)
    state = np.random.SeedSequence([7, 3, 1]).generate_state(1, dtype=np.uint64)[0]
    assert loader._seed(3) == int(state) >> 33


def test_the_last_batch_holds_no_padding(mixed_tile_dataset):
    (*_, last) = dali(mixed_tile_dataset, "train", batch_size=5, training=False)
    assert len(last["key"]) == 2 == last["image"].shape[0] == len(last["label"])
    assert torch.isfinite(last["image"]).all()


def test_a_damaged_byte_in_a_shard_never_reaches_a_dali_batch(mixed_tile_dataset, tmp_path):
    import shutil

    from medshard.errors import CorruptDataError
    from medshard.shards.reader import open_dataset

    copy = tmp_path / "ds"
    shutil.copytree(mixed_tile_dataset, copy)
    row = next(r for r in open_dataset(copy).manifest.to_pylist() if r["split"] == "val")
    shard = copy / row["shard"]
    data = bytearray(shard.read_bytes())
    data[row["offset"] + 512 + 40] ^= 0x01  # inside the first member's data
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match=rf"sample '{row['key']}': checksum mismatch"):
        for _ in dali(open_dataset(copy)):
            pass
