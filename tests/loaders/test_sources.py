"""Sample sources on real files: patches of real MRI volumes smaller than the patch."""

import numpy as np
import pytest
import torch

from medshard.loaders import Augment3D, build_loader
from medshard.loaders.sources import PatchSamples, Selection, patch_window
from medshard.shards.reader import open_dataset
from medshard.shards.zarr_store import open_sample

PATCHES = [(16, 16, 16), (32, 32, 32)]


def stored(ds, key: str) -> tuple[np.ndarray, np.ndarray]:
    row = next(r for r in ds.manifest.to_pylist() if r["key"] == key)
    image, mask = open_sample(ds.path, row["zarr_path"])
    return image[...], mask[...]


def inner(origin, patch, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where the volume lies in the patch and which part of it, written out plainly."""
    in_patch, in_volume = [], []
    for o, p, s in zip(origin, patch, shape):
        first, last = max(o, 0), min(o + p, s)
        in_volume.append(slice(first, last))
        in_patch.append(slice(first - o, last - o))
    return tuple(in_patch), tuple(in_volume)


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("foreground", [0.0, 1.0], ids=["uniform", "foreground"])
@pytest.mark.parametrize("mode", ["minimum", "constant", "reflect"])
def test_patches_of_volumes_smaller_than_the_patch_are_padded(
    real_mri_dataset, patch, foreground, mode
):
    ds = open_dataset(real_mri_dataset)
    source = PatchSamples(
        ds,
        Selection("train"),
        patch,
        samples_per_volume=3,
        foreground_prob=foreground,
        pad_mode=mode,
    )
    smaller = 0
    for index in range(len(source)):
        sample = source.load(index, epoch=1)
        image, mask = stored(ds, sample["key"].split("#")[0])
        assert sample["image"].shape == (1, *patch) and sample["mask"].shape == patch
        in_patch, in_volume = inner(sample["origin"], patch, image.shape[1:])
        region = image[(slice(None), *in_volume)]
        assert np.array_equal(sample["image"][(slice(None), *in_patch)], region)
        assert np.array_equal(sample["mask"][in_patch], mask[in_volume])
        if foreground:
            assert sample["mask"].any()  # still centred on foreground when padded
        outside = np.ones(patch, bool)
        outside[in_patch] = False
        if not outside.any():
            continue
        smaller += 1
        assert not sample["mask"][outside].any()  # the mask is padded with background
        padded = sample["image"][0][outside]
        if mode == "minimum":
            assert np.all(padded == region.min())
        elif mode == "constant":
            assert np.all(padded == 0)
        else:
            margins = [(s.start, p - s.stop) for s, p in zip(in_patch, patch)]
            assert np.array_equal(sample["image"][0], np.pad(region[0], margins, mode="reflect"))
    assert smaller >= 3  # the 7 x 5 x 4 volume at least, in every patch of it


@pytest.mark.parametrize("patch", PATCHES)
def test_a_tiny_volume_sits_in_the_middle_of_the_patch(real_mri_dataset, patch):
    ds = open_dataset(real_mri_dataset)
    source = PatchSamples(ds, Selection("train"), patch, samples_per_volume=1, foreground_prob=0)
    index = [r["key"] for r in source.rows].index("standard")
    sample = source.load(index, epoch=0)
    image, _ = stored(ds, "standard")
    before = [(p - s) // 2 for p, s in zip(patch, image.shape[1:])]
    assert list(sample["origin"]) == [-b for b in before]
    centre = tuple(slice(b, b + s) for b, s in zip(before, image.shape[1:]))
    assert np.array_equal(sample["image"][(slice(None), *centre)], image)
    assert sample["image"].min() == image.min()  # the default fill: the channel minimum


@pytest.mark.parametrize("patch", PATCHES)
def test_the_loader_batches_padded_patches_of_real_mri(real_mri_dataset, patch):
    loader = build_loader(
        real_mri_dataset,
        "train",
        batch_size=2,
        patch_size=patch,
        samples_per_volume=2,
        foreground_prob=0.5,
        augment=Augment3D(flip_axes=(0, 1, 2), rot90_xy=True),
        backend="torch",
        num_workers=0,
    )
    batches = list(loader)
    assert sum(len(b["key"]) for b in batches) == 6
    for batch in batches:
        assert batch["image"].shape[1:] == (1, *patch) and batch["mask"].shape[1:] == patch
        assert torch.isfinite(batch["image"]).all()


def test_the_window_clips_to_the_volume_and_places_what_it_reads():
    read, placed = patch_window((-3, 2, 0), (8, 4, 4), (2, 10, 4))
    assert read == (slice(0, 2), slice(2, 6), slice(0, 4))
    assert placed == (slice(3, 5), slice(0, 4), slice(0, 4))
