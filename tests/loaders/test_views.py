"""Two views of one read: independent draws per view, a function of (seed, epoch, sample),
the same views where samples are read and where the batch lands, and the refusals; on
real tiles mixing gray, RGB, RGBA and palette, 8 and 16 bit."""

from collections import Counter

import pytest
import torch

from medshard.errors import DatasetError
from medshard.loaders import Augment2D
from medshard.loaders.sources import Selection, ShardSamples
from medshard.loaders.spec import LoaderOptions, LoaderSpecError
from medshard.loaders.views import (
    DeviceViews,
    ViewPipeline,
    ViewTransform,
    build_view_loader,
)
from medshard.shards.reader import open_dataset

GEOMETRY = Augment2D(random_crop=(48, 48), flip_h=True, flip_v=True, rot90=True)
SMALL = Augment2D(resize=(20, 28), random_crop=(16, 16), flip_h=True, flip_v=True, rot90=True)


def _loader(path, split="train", **overrides):
    options = dict(
        augment=GEOMETRY,
        pipeline=ViewPipeline(),
        channels=3,
        seed=5,
        rank=0,
        world_size=1,
        device="cpu",
    )
    return build_view_loader(
        open_dataset(path), split, LoaderOptions(batch_size=4, num_workers=0), **options | overrides
    )


def test_each_sample_is_read_once_per_epoch_and_gives_two_different_views(
    mixed_tile_dataset, monkeypatch
):
    reads = Counter()
    raw = ShardSamples.raw

    def counting(self, index):
        reads[self.rows[index]["key"]] += 1
        return raw(self, index)

    monkeypatch.setattr(ShardSamples, "raw", counting)
    loader = _loader(mixed_tile_dataset)
    keys = []
    for batch in loader:
        assert batch["image"].shape[1:] == (2, 3, 48, 48)
        assert batch["image"].dtype == torch.float32
        for first, second in batch["image"]:
            assert not torch.allclose(first, second)
        keys += batch["key"]
    assert sorted(reads) == sorted(keys) and set(reads.values()) == {1}


def test_the_views_are_a_function_of_seed_epoch_and_sample(mixed_tile_dataset):
    sample = ShardSamples(open_dataset(mixed_tile_dataset), Selection("train")).load(2, 0)
    transform = ViewTransform(
        GEOMETRY.model_copy(update={"normalize": "none"}), ViewPipeline(), 1, 3
    )
    again = transform(dict(sample), 2, 0)["image"]
    assert torch.equal(transform(dict(sample), 2, 0)["image"], again)
    assert not torch.equal(transform(dict(sample), 2, 1)["image"], again)
    assert float(again.min()) >= 0.0 and float(again.max()) <= 1.0  # the [0, 1] scale


def test_validation_views_stay_the_same_from_pass_to_pass(mixed_tile_dataset):
    loader = _loader(mixed_tile_dataset, "val", training=False, uneven="uneven")
    first, second = list(loader), list(loader)
    assert [b["key"] for b in first] == [b["key"] for b in second]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, second))


@pytest.mark.parametrize("channels", [1, 3])
def test_views_without_random_steps_are_the_evaluation_images(mixed_tile_dataset, channels):
    from medshard.loaders import build_loader

    still = ViewPipeline(jitter_prob=0.0, blur_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0))
    augment = Augment2D(channels=channels)
    views = _loader(mixed_tile_dataset, augment=augment, pipeline=still, channels=channels)
    plain = build_loader(
        mixed_tile_dataset,
        "train",
        augment=augment,
        training=False,
        batch_size=4,
        num_workers=0,
        backend="torch",
        device="cpu",
    )
    by_key = {k: image for b in plain for k, image in zip(b["key"], b["image"])}
    for batch in views:
        for key, pair in zip(batch["key"], batch["image"]):
            assert torch.allclose(pair[0], by_key[key], atol=1e-5)
            assert torch.allclose(pair[1], by_key[key], atol=1e-5)


def test_refusals(mixed_tile_dataset, volume_dataset):
    with pytest.raises(LoaderSpecError, match=r"leave augment\.brightness and augment\.contrast"):
        _loader(mixed_tile_dataset, augment=GEOMETRY.model_copy(update={"brightness": 0.1}))
    with pytest.raises(DatasetError, match=r"two views are made of 2D images, and this dataset"):
        _loader(volume_dataset)


def test_views_made_where_the_batch_lands_are_those_made_where_samples_are_read(image_dataset):
    read, landed = (
        _loader(image_dataset, channels=1, on_device=flag, augment=SMALL) for flag in (False, True)
    )
    assert isinstance(landed.device_transform, DeviceViews)
    for one, other in zip(read, landed):
        assert one["key"] == other["key"]
        # the same draws; a resize of stored 16-bit integers rounds to a level (1e-4 here,
        # normalised), one of floats does not
        assert torch.allclose(one["image"], other["image"], atol=1e-4)


def test_views_on_the_device_need_one_stored_shape(mixed_tile_dataset):
    with pytest.raises(
        LoaderSpecError, match=r"holds images of \d+ stored shapes, which do not stack"
    ):
        _loader(mixed_tile_dataset, on_device=True)


@pytest.mark.parametrize("original", [False, True])
def test_views_are_cut_from_the_training_copies_unless_the_originals_are_asked(tmp_path, original):
    from tests.conftest import ingest
    from tests.real_data import mixed_tile_table

    table = mixed_tile_table(tmp_path / "raw", copies=1, size=48)
    ingest(table, tmp_path / "ds", val_fraction=0.0, train_size=(24, 24))
    options = LoaderOptions(batch_size=4, num_workers=0, original=original)
    loader = build_view_loader(
        open_dataset(tmp_path / "ds"),
        "train",
        options,
        augment=Augment2D(flip_h=True),
        pipeline=ViewPipeline(),
        channels=1,
        seed=0,
        rank=0,
        world_size=1,
        device="cpu",
    )
    sizes = {tuple(b["image"].shape[-2:]) for b in loader}
    assert sizes == ({(48, 48)} if original else {(24, 24)})


def test_a_sample_without_the_member_to_read_is_refused_naming_it(image_dataset):
    from medshard.errors import DatasetError as Refused
    from medshard.loaders.copies import PixelSource
    from medshard.loaders.views import CopySamples

    shards = ShardSamples(open_dataset(image_dataset), Selection("train"))
    samples = CopySamples(shards, PixelSource(("train.npy",), True, {}))
    with pytest.raises(Refused, match=r"sample 'images_img_\d+' gives no image \(.*train\.npy"):
        samples.load(0, 0)


def test_a_split_without_samples_is_refused(image_dataset):
    with pytest.raises(DatasetError, match=r"no split 'holdout'; the splits are train"):
        _loader(image_dataset, "holdout", augment=SMALL)
