"""One loader spec, validated once: a spec, keyword fields, or both (fields win)."""

import pytest
import torch
from pydantic import ValidationError

from medshard.loaders import Augment2D, Augment3D, LoaderSpec, LoaderSpecError, build_loader

RAW = Augment2D(normalize="none")


def batches(loader) -> list[tuple[list[str], torch.Tensor]]:
    return [(batch["key"], batch["image"]) for batch in loader]


def test_keyword_fields_override_the_spec(mixed_tile_dataset):
    spec = LoaderSpec(batch_size=4, augment=RAW, training=False, backend="torch", num_workers=0)
    from_spec = build_loader(mixed_tile_dataset, "val", spec, batch_size=2)
    by_keywords = build_loader(
        mixed_tile_dataset,
        "val",
        batch_size=2,
        augment=RAW,
        training=False,
        backend="torch",
        num_workers=0,
    )
    got, expected = batches(from_spec), batches(by_keywords)
    assert [len(keys) for keys, _ in got] == [2, 2, 2, 2, 1]
    assert [keys for keys, _ in got] == [keys for keys, _ in expected]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, expected))
    assert spec.batch_size == 4  # the spec itself is left as it was


def test_the_readme_call_needs_no_spec(real_mri_dataset):
    loader = build_loader(
        real_mri_dataset,
        "train",
        batch_size=2,
        patch_size=(16, 16, 16),
        augment=Augment3D(flip_axes=(0, 1, 2), gamma=(0.8, 1.25)),
        num_workers=0,
    )
    loader.set_epoch(1)
    shapes = {tuple(batch["image"].shape[1:]) for batch in loader}
    assert shapes == {(1, 16, 16, 16)}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batchsize": 2}, "build_loader takes no option 'batchsize'"),
        ({"batch_size": 0}, "batch_size must be a positive number of samples, not 0"),
        ({"num_workers": -1}, "num_workers: Input should be greater than or equal to 0"),
        ({"foreground_prob": 1.5}, "foreground_prob: Input should be less than or equal to 1"),
        ({"patch_size": (0, 8, 8)}, r"a patch needs at least one voxel along each axis"),
        ({"uneven": "sometimes"}, "uneven: Input should be 'drop', 'pad' or 'uneven'"),
        ({"pad_mode": "wrap"}, "pad_mode: Input should be 'minimum', 'constant' or 'reflect'"),
        ({"shuffle_shards": 0}, "shuffle_shards: Input should be greater than or equal to 1"),
        ({"shuffle_shards": True}, "shuffle_shards: Input should be a valid integer"),
        ({"shuffle_shards": "2"}, "shuffle_shards: Input should be a valid integer"),
    ],
)
def test_a_bad_option_is_refused_in_one_sentence_naming_the_dataset(
    mixed_tile_dataset, fields, message
):
    options = {"batch_size": 2} | fields
    with pytest.raises(LoaderSpecError, match=f"^{mixed_tile_dataset}: {message}"):
        build_loader(mixed_tile_dataset, "val", **options)


def test_a_spec_is_frozen_and_takes_a_device_by_name():
    spec = LoaderSpec(batch_size=3, device=torch.device("cpu"), fields=["image", "label"])
    assert spec.device == "cpu" and spec.fields == ("image", "label")
    with pytest.raises(ValidationError, match="frozen"):
        spec.batch_size = 5
    assert LoaderSpec.of(spec) == spec and LoaderSpec.of(spec, seed=2).seed == 2
