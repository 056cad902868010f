"""build_loader refuses plans that cannot work, in one sentence each, before any batch;
evaluation reads each sample exactly once across ranks."""

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import skimage.data
import tifffile

from medshard.errors import DatasetError
from medshard.loaders import Augment2D, LoaderSpecError, build_loader, dali_available
from medshard.loaders.images2d import ImageLoader
from tests.conftest import ingest, write_table


@pytest.mark.parametrize("batch_size", [0, -2])
def test_a_batch_size_below_one_is_refused(mixed_tile_dataset, batch_size):
    with pytest.raises(
        LoaderSpecError,
        match=f"{mixed_tile_dataset}: batch_size must be a positive number of samples, "
        f"not {batch_size}",
    ):
        build_loader(mixed_tile_dataset, "val", batch_size=batch_size)


def test_more_ranks_than_samples_with_drop_is_refused(mixed_tile_dataset):
    with pytest.raises(
        DatasetError,
        match="split 'val' holds 9 samples, fewer than the 12 ranks, so uneven='drop' would "
        "leave every rank without a batch",
    ):
        build_loader(mixed_tile_dataset, "val", batch_size=2, uneven="drop", rank=0, world_size=12)


def test_drop_last_that_leaves_no_batch_is_refused(mixed_tile_dataset):
    with pytest.raises(
        DatasetError,
        match="split 'val' gives each of the 2 ranks 5 samples, fewer than one batch of 8",
    ):
        build_loader(mixed_tile_dataset, "val", batch_size=8, drop_last=True, rank=1, world_size=2)


def test_evaluation_on_more_ranks_than_samples_is_refused(mixed_tile_dataset):
    with pytest.raises(
        DatasetError, match="fewer than the 10 ranks, so uneven='uneven' would leave rank 9"
    ):
        build_loader(
            mixed_tile_dataset, "val", batch_size=2, uneven="uneven", rank=0, world_size=10
        )


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 9])
def test_evaluation_ranks_count_each_sample_exactly_once(mixed_tile_dataset, world_size):
    seen = Counter()
    for rank in range(world_size):
        loader = build_loader(
            mixed_tile_dataset,
            "val",
            batch_size=2,
            backend="torch",
            uneven="uneven",
            training=False,
            rank=rank,
            world_size=world_size,
            num_workers=2,
        )
        batches = list(loader)
        assert len(batches) == len(loader) > 0
        seen.update(key for batch in batches for key in batch["key"])
    assert len(seen) == 9 and set(seen.values()) == {1}


@pytest.mark.parametrize("world_size", [2, 4])
def test_the_trainer_validates_on_each_sample_exactly_once(mixed_tile_dataset, world_size):
    from medshard.shards.reader import open_dataset
    from medshard.trainers.config import TrainConfig
    from medshard.trainers.setup import build_loaders

    ds = open_dataset(mixed_tile_dataset)
    config = TrainConfig(
        name="t",
        dataset=mixed_tile_dataset,
        task="classification",
        loader={"batch_size": 2, "num_workers": 0, "backend": "torch"},
    )
    seen = Counter()
    for rank in range(world_size):
        accelerator = SimpleNamespace(process_index=rank, num_processes=world_size, device="cpu")
        _, val = build_loaders(config, ds, accelerator)
        seen.update(key for batch in val for key in batch["key"])
    assert len(seen) == 9 and set(seen.values()) == {1}


@pytest.fixture(scope="module")
def float_tiles(tmp_path_factory):
    """Two float32 TIFF tiles of scikit-image's camera, in [0, 1]."""
    root = tmp_path_factory.mktemp("float-tiles")
    camera = skimage.data.camera()[:32, :32].astype(np.float32) / 255
    (root / "raw").mkdir()
    for i in range(2):
        tifffile.imwrite(root / f"raw/f{i}.tif", np.rot90(camera, i).copy())
    table = write_table(
        root / "raw/labels.csv", ["image_path", "stage"], [["f0.tif", "a"], ["f1.tif", "b"]]
    )
    ingest(table, root / "ds", label_col="stage", val_fraction=0.0)
    return root / "ds"


def test_float_images_go_to_the_torch_backend(float_tiles):
    loader = build_loader(float_tiles, "train", batch_size=2, augment=Augment2D(normalize="none"))
    assert isinstance(loader, ImageLoader)
    (batch,) = loader
    assert batch["image"].shape == (2, 1, 32, 32) and float(batch["image"].max()) <= 1.0


@pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only")
def test_float_images_are_refused_by_the_dali_backend(float_tiles):
    with pytest.raises(
        DatasetError,
        match="split 'train' holds float32 images, which the DALI backend does not decode",
    ):
        build_loader(float_tiles, "train", batch_size=2, backend="dali")
