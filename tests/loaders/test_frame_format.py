"""One channel count, unit scale and one size per batch, on real tiles that mix gray, RGB,
RGBA and palette, 8 and 16 bit, PNG, JPEG and TIFF; both backends."""

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from medshard.codecs import decode_image
from medshard.errors import DatasetError
from medshard.loaders import Augment2D, build_loader, dali_available
from medshard.loaders.frame_format import LUMA, stats_for, to_channels
from medshard.shards.reader import open_dataset
from tests.conftest import ingest, write_table
from tests.real_data import write_mixed_tiles

BACKENDS = [
    "torch",
    pytest.param(
        "dali",
        marks=pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only"),
    ),
]
RAW = Augment2D(normalize="none")


def loader(ds, split, backend, augment, **options):
    return build_loader(
        ds, split, batch_size=4, backend=backend, augment=augment, device="cpu", **options
    )


def stored_unit(ds_path, channels: int) -> dict[str, np.ndarray]:
    """Each stored image decoded on its own, as (channels, H, W) in [0, 1]."""
    out = {}
    for split in ("train", "val"):
        for sample in open_dataset(ds_path).samples(split):
            member = next(m for m in sample if m.startswith("image."))
            array = decode_image(sample[member], member.split(".", 1)[1])
            scale = np.iinfo(array.dtype).max
            array = array[:, :, None] if array.ndim == 2 else array[:, :, :3]  # alpha dropped
            unit = array.astype(np.float64) / scale
            if channels == 3 and unit.shape[2] == 1:
                unit = np.repeat(unit, 3, axis=2)
            elif channels == 1 and unit.shape[2] == 3:
                unit = (unit * np.asarray(LUMA)).sum(axis=2, keepdims=True)
            out[sample["__key__"]] = unit.transpose(2, 0, 1)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels", [None, 1, 3])
@pytest.mark.parametrize("split", ["train", "val"])
def test_every_batch_of_mixed_tiles_has_one_channel_count(
    mixed_tile_dataset, backend, channels, split
):
    augment = Augment2D(channels=channels, flip_h=True, rot90=True, brightness=0.1)
    batches = list(loader(mixed_tile_dataset, split, backend, augment, training=True))
    assert sum(len(b["key"]) for b in batches) == {"train": 12, "val": 9}[split]
    for batch in batches:
        assert batch["image"].shape[1:] == (channels or 3, 64, 64)
        assert batch["image"].dtype == torch.float32 and torch.isfinite(batch["image"]).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels", [None, 1])
def test_each_tile_is_scaled_by_its_own_bit_depth(mixed_tile_dataset, backend, channels):
    expected = stored_unit(mixed_tile_dataset, channels or 3)
    seen = 0
    for split in ("train", "val"):
        augment = Augment2D(normalize="none", channels=channels)
        for batch in loader(mixed_tile_dataset, split, backend, augment, training=False):
            for key, image in zip(batch["key"], batch["image"].numpy()):
                # JPEG decoders and DALI's 8-bit gray conversion round differently
                loose = "jpg" in key or (backend == "dali" and channels == 1)
                tolerance = 2.5 / 255 if loose else 1e-6
                assert np.abs(image - expected[key]).max() <= tolerance, key
                seen += 1
    assert seen == 21


@pytest.fixture(scope="module")
def same_picture(tmp_path_factory):
    """One picture (scikit-image's camera) stored as an 8-bit and as a 16-bit PNG."""
    root = tmp_path_factory.mktemp("same-picture")
    camera = skimage.data.camera()[:48, :48]
    (root / "raw").mkdir()
    Image.fromarray(camera).save(root / "raw/camera8.png")
    Image.fromarray(camera.astype(np.uint16) * 257).save(root / "raw/camera16.png")
    rows = [["camera8.png", "a"], ["camera16.png", "b"]]
    table = write_table(root / "raw/labels.csv", ["image_path", "stage"], rows)
    ingest(table, root / "ds", label_col="stage", val_fraction=0.0)
    return root / "ds", camera


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_picture_at_8_and_16_bit_normalises_to_the_same_values(same_picture, backend):
    path, camera = same_picture
    stats = open_dataset(path).card.stats
    (batch,) = loader(path, "train", backend, Augment2D(channels=1), training=False)
    images = dict(zip(batch["key"], batch["image"]))
    assert torch.allclose(images["camera8"], images["camera16"], atol=1e-5)
    by_hand = (camera / 255.0 - stats.mean[0]) / stats.std[0]
    assert np.allclose(images["camera8"][0].numpy(), by_hand, atol=1e-4)


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory):
    """The same tile kinds cut at 48 and at 64 pixels."""
    root = tmp_path_factory.mktemp("two-sizes")
    rows = [[f"s{size}/{name}", "a"] for size in (48, 64) for name in ("ihc_rgb8.png",)]
    for size in (48, 64):
        write_mixed_tiles(root / f"raw/s{size}", size)
    table = write_table(root / "raw/labels.csv", ["image_path", "stage"], rows)
    ingest(table, root / "ds", label_col="stage", val_fraction=0.0)
    return root / "ds"


@pytest.mark.parametrize("backend", BACKENDS)
def test_images_of_different_sizes_need_a_resize(two_sizes, backend):
    with pytest.raises(
        DatasetError,
        match=r"images 's48_ihc_rgb8' \(48x48\) and 's64_ihc_rgb8' \(64x64\) of split 'train' "
        r"differ in size and the augmentation neither resizes nor crops them",
    ):
        loader(two_sizes, "train", backend, RAW)
    with pytest.raises(DatasetError, match=r"image 's48_ihc_rgb8' .* is 48x48, smaller than"):
        loader(two_sizes, "train", backend, Augment2D(random_crop=(56, 56)))
    (batch,) = loader(two_sizes, "train", backend, Augment2D(resize=(32, 32)))
    assert batch["image"].shape == (2, 3, 32, 32)
    (batch,) = loader(two_sizes, "train", backend, Augment2D(random_crop=(40, 40)))
    assert batch["image"].shape == (2, 3, 40, 40)


def test_a_crop_larger_than_the_resize_is_refused(two_sizes):
    with pytest.raises(DatasetError, match="the crop 40x40 does not fit in the resize 32x32"):
        loader(two_sizes, "train", "torch", Augment2D(resize=(32, 32), random_crop=(40, 40)))


def test_channels_are_unified_gray_repeated_and_alpha_dropped():
    gray, rgba = torch.rand(1, 2, 2), torch.rand(4, 2, 2)
    assert torch.equal(to_channels(gray, 3), gray.expand(3, 2, 2))
    assert torch.equal(to_channels(rgba, 3), rgba[:3])
    assert torch.equal(to_channels(rgba, None), rgba[:3])
    luma = sum(w * rgba[i] for i, w in enumerate(LUMA))
    assert torch.allclose(to_channels(rgba, 1)[0], luma)


def test_statistics_follow_the_channels():
    mean, std = [0.2, 0.4, 0.6], [0.1, 0.2, 0.3]
    assert stats_for((mean, std), 3) == (mean, std)
    assert stats_for(([0.5], [0.2]), 3) == ([0.5] * 3, [0.2] * 3)
    (gray_mean,), (gray_std,) = stats_for((mean, std), 1)
    assert gray_mean == pytest.approx(np.dot(LUMA, mean)) and gray_std == pytest.approx(
        np.dot(LUMA, std)
    )


def test_the_dataset_channel_count_is_the_cards(mixed_tile_dataset, same_picture):
    from medshard.loaders import dataset_channels

    assert dataset_channels(open_dataset(mixed_tile_dataset)) == 3
    assert dataset_channels(open_dataset(same_picture[0])) == 1


def card_and_manifest(kind: str, channels, rows: list[dict], mean: list[float]):
    """A dataset as the loaders see it: a card and a manifest table."""
    from types import SimpleNamespace

    import pyarrow as pa

    stats = SimpleNamespace(mean=mean, std=[m / 2 for m in mean])
    card = SimpleNamespace(kind=kind, channels=channels, stats=stats)
    return SimpleNamespace(card=card, manifest=pa.Table.from_pylist(rows))


def test_without_a_card_count_the_channels_come_from_the_manifest():
    from medshard.loaders import dataset_channels

    rows = [{"shape": [4, 8, 8], "dtype": "uint8"}, {"shape": [1, 8, 8], "dtype": "uint16"}]
    assert dataset_channels(card_and_manifest("images", None, rows, [0.5])) == 3
    rows = [{"shape": [1, 8, 8], "dtype": "uint16"}, {"shape": [2, 8, 8], "dtype": "uint8"}]
    assert dataset_channels(card_and_manifest("images", None, rows, [0.5])) == 1
    video = [{"shape": [10, 8, 8], "dtype": "uint8"}]
    assert dataset_channels(card_and_manifest("video", None, video, [0.5])) == 1


def test_statistics_in_stored_units_are_brought_to_unit_scale():
    from medshard.loaders.frame_format import unit_stats

    video = [{"shape": [10, 8, 8], "dtype": "uint8"}]
    assert unit_stats(card_and_manifest("video", None, video, [51.0])) == ([0.2], [0.1])
    images = [{"shape": [1, 8, 8], "dtype": "uint16"}]
    assert unit_stats(card_and_manifest("images", 1, images, [0.2])) == ([0.2], [0.1])
