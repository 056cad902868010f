"""The torch backend on real tiles: resume at every batch, state that names its dataset."""

import pytest
import torch

from medshard.errors import DatasetError
from medshard.loaders import Augment2D, build_loader

AUGMENT = Augment2D(flip_h=True, flip_v=True, brightness=0.2, contrast=0.2)


def passes(loader) -> tuple[list[dict], list[dict]]:
    """Every batch of one pass, and the state a run interrupted after each would save."""
    states, batches = [loader.state_dict()], []
    for batch in loader:
        batches.append(batch)
        states.append(loader.state_dict())
    return batches, states


def assert_same_batches(got: list[dict], expected: list[dict]) -> None:
    assert [b["key"] for b in got] == [b["key"] for b in expected]
    for a, b in zip(got, expected):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers", [0, 1, 2, 3, 4])
def test_resume_after_every_batch_yields_exactly_the_rest(mixed_tile_dataset, workers):
    # 9 samples in batches of 2: five batches, an odd count, and a short last one
    loader = build_loader(
        mixed_tile_dataset,
        "val",
        batch_size=2,
        backend="torch",
        seed=4,
        augment=AUGMENT,
        training=True,
        num_workers=workers,
    )
    loader.set_epoch(3)
    expected, states = passes(loader)
    assert len(expected) == len(loader) == 5
    for done, state in enumerate(states):
        assert (state["epoch"], state["position"]) == (3, min(2 * done, 9))
        loader.load_state_dict(state)  # the same workers serve every resumed pass
        assert_same_batches(list(loader), expected[done:])


def test_a_fresh_loader_resumes_a_saved_state(mixed_tile_dataset):
    def fresh():
        return build_loader(
            mixed_tile_dataset, "val", batch_size=2, backend="torch", augment=AUGMENT
        )

    first = fresh()
    expected, states = passes(first)
    resumed = fresh()
    resumed.load_state_dict(states[3])
    assert_same_batches(list(resumed), expected[3:])


def test_the_state_names_its_dataset_split_and_fold(mixed_tile_dataset):
    from medshard.shards.reader import open_dataset

    loader = build_loader(mixed_tile_dataset, "val", batch_size=2, backend="torch")
    state = loader.state_dict()
    assert state["dataset"] == open_dataset(mixed_tile_dataset).card.fingerprint
    assert (state["split"], state["fold"]) == ("val", None)


def test_a_state_of_another_dataset_is_refused(mixed_tile_dataset, image_dataset):
    other = build_loader(image_dataset, "train", batch_size=2, backend="torch").state_dict()
    loader = build_loader(mixed_tile_dataset, "train", batch_size=2, backend="torch")
    with pytest.raises(
        DatasetError, match=r"cannot resume from a loader state of another dataset \(fingerprint"
    ):
        loader.load_state_dict(other)


def test_a_state_of_another_split_or_fold_is_refused(mixed_tile_dataset):
    val = build_loader(mixed_tile_dataset, "val", batch_size=2, backend="torch").state_dict()
    loader = build_loader(mixed_tile_dataset, "train", batch_size=2, backend="torch")
    with pytest.raises(
        DatasetError,
        match="cannot resume from a loader state of split 'val', this loader reads split 'train'",
    ):
        loader.load_state_dict(val)
    with pytest.raises(DatasetError, match="of split 'train' of fold 2, this loader reads"):
        loader.load_state_dict(loader.state_dict() | {"fold": 2})


def test_a_state_of_another_order_is_refused(mixed_tile_dataset):
    loader = build_loader(mixed_tile_dataset, "train", batch_size=2, backend="torch")
    with pytest.raises(DatasetError, match="saved with seed=3, this loader has seed=0, so the"):
        loader.load_state_dict(loader.state_dict() | {"seed": 3})
    by_shards = build_loader(
        mixed_tile_dataset, "train", batch_size=2, backend="torch", shuffle_shards=1
    )
    with pytest.raises(DatasetError, match="saved with shuffle_shards=None, this loader has "):
        by_shards.load_state_dict(loader.state_dict())
    by_shards.load_state_dict(by_shards.state_dict())
