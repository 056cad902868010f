"""Two views of one read: independent draws per view, the intensity steps checked by hand,
each view's probabilities, and the refusals; on real tiles mixing gray, RGB, RGBA and
palette, 8 and 16 bit."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from medshard.errors import DatasetError
from medshard.loaders import Augment2D
from medshard.loaders.sources import Selection, ShardSamples
from medshard.loaders.spec import LoaderOptions, LoaderSpecError
from medshard.loaders.views import (
    ViewPipeline,
    ViewTransform,
    build_view_loader,
    draw_view,
    gaussian_blur,
    view_generator,
    view_intensity,
)
from medshard.shards.reader import open_dataset

GEOMETRY = Augment2D(random_crop=(48, 48), flip_h=True, flip_v=True, rot90=True)


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
    load = ShardSamples.load

    def counting(self, index, epoch):
        reads[self.rows[index]["key"]] += 1
        return load(self, index, epoch)

    monkeypatch.setattr(ShardSamples, "load", counting)
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


def test_solarisation_turns_values_from_one_half_up_and_jitter_is_contrast_then_brightness():
    views = torch.tensor([0.2, 0.5, 0.7, 0.9]).view(1, 1, 1, 4).repeat(2, 1, 1, 1)
    params = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 0.1, 0.0, 0.0]])
    out = view_intensity(views, params, 1, None)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.2, 0.5, 0.3, 0.1]))
    jittered = [(v - 0.5) * 2.0 + 0.6 for v in (0.2, 0.5, 0.7, 0.9)]
    assert torch.allclose(out[1, 0, 0], torch.tensor(jittered).clamp(0, 1))


def test_blur_is_a_normalised_gaussian_per_image_and_sigma_zero_leaves_it():
    delta = torch.zeros(2, 1, 9, 9)
    delta[:, :, 4, 4] = 1.0
    blurred = gaussian_blur(delta, torch.tensor([1.5, 0.0]), radius=4)
    taps = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    taps /= taps.sum()
    assert np.allclose(blurred[0, 0].numpy(), np.outer(taps, taps), atol=1e-6)
    assert torch.equal(blurred[1], delta[1])


def test_each_view_has_its_own_probabilities():
    pipeline = ViewPipeline(blur_prob=(1.0, 0.0), solarize_prob=(0.0, 1.0), jitter_prob=0.0)
    for index in range(20):
        first = draw_view(pipeline, 0, view_generator(0, 0, index, 0))
        second = draw_view(pipeline, 1, view_generator(0, 0, index, 1))
        assert first[:2] == [1.0, 0.0] and 0.1 <= first[2] <= 2.0 and first[3] == 0.0
        assert second[2] == 0.0 and second[3] == 1.0
    blur_half = ViewPipeline(blur_prob=(0.5, 0.5))
    blurred = [draw_view(blur_half, 0, view_generator(0, 0, i, 0))[2] > 0 for i in range(400)]
    assert math.isclose(sum(blurred) / 400, 0.5, abs_tol=0.1)


def test_refusals(mixed_tile_dataset, volume_dataset):
    with pytest.raises(LoaderSpecError, match=r"leave augment\.brightness and augment\.contrast"):
        _loader(mixed_tile_dataset, augment=GEOMETRY.model_copy(update={"brightness": 0.1}))
    with pytest.raises(DatasetError, match=r"two views are made of 2D images, and this dataset"):
        _loader(volume_dataset)
    with pytest.raises(ValidationError, match=r"blur_prob holds a probability per view"):
        ViewPipeline(blur_prob=(1.5, 0.1))
    with pytest.raises(ValidationError, match=r"blur_sigma must satisfy 0 < low <= high"):
        ViewPipeline(blur_sigma=(2.0, 1.0))
