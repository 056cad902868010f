"""The torch backend's 2D image loader on real tiles (gray, RGB, RGBA, palette; 8 and 16
bit; PNG, JPEG, TIFF) with training copies: the copy path gives the decode path's batch
of the same copy; training copies by default, the originals when asked; later epochs
read the pixel member alone; exact cover and resume hold; damage is caught."""

import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from medshard.codecs import decode_image
from medshard.errors import CorruptDataError, DatasetError
from medshard.loaders import Augment2D, build_loader
from medshard.loaders.augment import augment_2d
from medshard.loaders.chain2d import draw_count
from medshard.loaders.draws import sample_units
from medshard.loaders.frame_format import bit_depth_scale
from medshard.loaders.images2d import ImageLoader
from medshard.loaders.sources import ShardSamples
from medshard.shards.layout import index_name
from medshard.shards.reader import open_dataset
from tests.conftest import ingest
from tests.real_data import mixed_size_table, mixed_tile_table

AUGMENT = Augment2D(
    random_crop=(40, 40), flip_h=True, flip_v=True, rot90=True, contrast=0.2, brightness=0.1
)


def copies(tmp_path_factory, name: str, **options):
    root = tmp_path_factory.mktemp(name)
    table = mixed_tile_table(root / "raw")
    ingest(table, root / "ds", label_col="stage", val_fraction=0.0, shard_samples=4, **options)
    return root / "ds"


@pytest.fixture(scope="module")
def raw_copies(tmp_path_factory):
    """21 mixed tiles of 64 pixels with raw training copies of 48."""
    return copies(tmp_path_factory, "raw-copies", train_size="48")


@pytest.fixture(scope="module")
def png_copies(tmp_path_factory):
    """The same tiles with PNG training copies of 48 (lossless: the same pixels)."""
    return copies(tmp_path_factory, "png-copies", train_size="48", train_format="png")


def load(ds, **options) -> list[dict]:
    spec = dict(batch_size=4, backend="torch", device="cpu", augment=AUGMENT, seed=3)
    return list(build_loader(ds, "train", **(spec | options)))


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_the_copy_path_gives_the_decode_path_batch_of_the_same_copy(
    raw_copies, png_copies, channels
):
    augment = AUGMENT.model_copy(update={"channels": channels})
    raw = load(raw_copies, augment=augment, num_workers=2)
    decoded = load(png_copies, augment=augment, num_workers=1)
    assert [b["key"] for b in raw] == [b["key"] for b in decoded]
    for a, b in zip(raw, decoded):
        assert a["image"].shape[1:] == (channels or 3, 40, 40)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_a_batch_is_the_chain_of_augment_2d_on_each_copy(raw_copies):
    loader = build_loader(raw_copies, "train", batch_size=4, augment=AUGMENT, seed=3)
    (first, *_) = loader
    filler, samples = loader.filler, loader.filler.source
    for slot, key in enumerate(first["key"]):
        index = next(i for i, r in enumerate(samples.rows) if r["key"] == key)
        copy = filler.pixels.pixels(samples.raw(index))
        expected = augment_2d(
            torch.from_numpy(np.array(copy)),
            AUGMENT,
            sample_units(filler.seed, 0, [index], draw_count(filler.chain))[0],
            bit_depth_scale(copy.dtype),
            filler.stats,
            3,
        )
        torch.testing.assert_close(first["image"][slot], expected, atol=1e-6, rtol=0)


def test_copies_by_default_and_the_originals_when_asked(raw_copies):
    plain = Augment2D(normalize="none")
    (copy_batch, *_) = load(raw_copies, augment=plain, training=False, shuffle=False)
    (original, *_) = load(raw_copies, augment=plain, training=False, shuffle=False, original=True)
    assert copy_batch["image"].shape[2:] == (48, 48) and original["image"].shape[2:] == (64, 64)
    ds = open_dataset(raw_copies)
    for key, image in zip(original["key"], original["image"]):
        sample = next(s for s in ds.samples("train") if s["__key__"] == key)
        field = next(f for f in sample if f.startswith("image."))
        pixels = decode_image(sample[field], field.split(".", 1)[1])
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels[:, :, :3]
        unit = pixels / np.iinfo(pixels.dtype).max
        if unit.shape[2] == 1:
            unit = np.repeat(unit, 3, axis=2)
        tolerance = 2.5 / 255 if field.endswith("jpg") else 1e-6  # JPEG decoders round
        assert np.abs(image.numpy() - unit.transpose(2, 0, 1)).max() <= tolerance, key


def test_later_epochs_read_the_pixel_member_alone(raw_copies, monkeypatch):
    whole = Counter()
    read = ShardSamples.sample_bytes

    def counted(self, index):
        whole[index] += 1
        return read(self, index)

    monkeypatch.setattr(ShardSamples, "sample_bytes", counted)
    loader = build_loader(raw_copies, "train", batch_size=4, augment=AUGMENT, num_workers=2)
    first = list(loader)
    assert len(whole) == 21 and set(whole.values()) == {1}  # each read whole once, checked
    loader.set_epoch(1)
    assert [len(b["key"]) for b in loader] == [len(b["key"]) for b in first]
    assert len(whole) == 21 and set(whole.values()) == {1}


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_and_threads_read_each_sample_once_and_resume_exactly(raw_copies, world_size):
    seen = Counter()
    for rank in range(world_size):
        options = dict(rank=rank, world_size=world_size, uneven="uneven", num_workers=2)
        full = load(raw_copies, **options)
        seen.update(key for batch in full for key in batch["key"])
        loader = build_loader(raw_copies, "train", batch_size=4, augment=AUGMENT, seed=3, **options)
        iterator = iter(loader)
        next(iterator)
        state = loader.state_dict()
        resumed = build_loader(
            raw_copies, "train", batch_size=4, augment=AUGMENT, seed=3, **options
        )
        resumed.load_state_dict(state)
        rest = list(resumed)
        assert [b["key"] for b in rest] == [b["key"] for b in full[1:]]
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(rest, full[1:]))
    assert len(seen) == 21 and set(seen.values()) == {1}


def test_a_random_resized_crop_batch_is_drawn_again_from_its_seed(raw_copies):
    augment = Augment2D(random_resized_crop=(32, 24), flip_h=True, normalize="imagenet")
    first, again = load(raw_copies, augment=augment), load(raw_copies, augment=augment)
    other = load(raw_copies, augment=augment, seed=4)
    assert all(b["image"].shape[1:] == (3, 32, 24) for b in first)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert not torch.equal(first[0]["image"], other[0]["image"])


@pytest.fixture
def damaged(raw_copies, tmp_path):
    shutil.copytree(raw_copies, tmp_path / "ds")
    return tmp_path / "ds"


def test_a_damaged_copy_is_caught_on_its_first_read(damaged):
    row = open_dataset(damaged).manifest.to_pylist()[5]
    with open(damaged / row["shard"], "r+b") as shard:
        shard.seek(row["offset"] + row["bytes"] - 600)
        shard.write(b"\xff")
    loader = build_loader(damaged, "train", batch_size=4, num_workers=1, shuffle=False)
    with pytest.raises(CorruptDataError, match=rf"sample {row['key']!r}: checksum mismatch"):
        list(loader)


def test_the_loader_finds_members_by_their_checked_headers_not_the_shard_index(raw_copies, damaged):
    row = open_dataset(damaged).manifest.to_pylist()[0]
    index = damaged / index_name(row["shard"])
    lines = index.read_text().splitlines()
    fields = lines[1].split()
    at = fields.index("train.npy")
    fields[at + 1] = str(int(fields[at + 1]) + 512)  # points past the copy's start
    index.write_text("\n".join([lines[0], " ".join(fields), *lines[2:]]) + "\n")
    options = dict(batch_size=4, num_workers=1, augment=AUGMENT, seed=2)
    loaders = [build_loader(d, "train", **options) for d in (damaged, raw_copies)]
    for epoch in (0, 1):  # whole samples, checked; then their pixel members alone
        for loader in loaders:
            loader.set_epoch(epoch)
        batches = [list(loader) for loader in loaders]
        assert len(batches[0]) == len(batches[1]) == 6
        for x, y in zip(*batches):
            assert x["key"] == y["key"] and torch.equal(x["image"], y["image"])


@pytest.mark.parametrize("how", ["written in place", "replaced"])
def test_a_shard_changed_after_its_first_read_is_checked_again_next_epoch(damaged, how):
    rows = open_dataset(damaged).manifest.to_pylist()
    row = next(r for r in rows if r["shard"].endswith("000000.tar"))
    loader = build_loader(damaged, "train", batch_size=4, num_workers=2, augment=AUGMENT)
    list(loader)  # every sample read whole and checked; later reads take the copy alone
    shard = damaged / row["shard"]
    data = bytearray(shard.read_bytes())
    data[row["offset"] + row["bytes"] - 600] ^= 0xFF  # inside the sample's training copy
    if how == "replaced":
        (damaged / "new.tar").write_bytes(bytes(data))
        (damaged / "new.tar").replace(shard)
    else:
        with open(shard, "r+b") as handle:
            handle.write(bytes(data))
    loader.set_epoch(1)
    with pytest.raises(CorruptDataError, match=rf"sample {row['key']!r}: checksum mismatch"):
        list(loader)


def test_a_shard_removed_after_its_first_read_is_named(damaged):
    row = open_dataset(damaged).manifest.to_pylist()[0]
    loader = build_loader(damaged, "train", batch_size=4, num_workers=1, augment=AUGMENT)
    list(loader)
    (damaged / row["shard"]).unlink()
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        with pytest.raises(DatasetError, match=rf"{row['shard']}: cannot open the shard"):
            list(loader)


def test_images_that_differ_in_size_are_refused_by_their_copies_sizes(tmp_path):
    table = mixed_size_table(tmp_path / "raw")
    ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.0, train_size="32")
    with pytest.raises(DatasetError, match=r"\(32x32\) and .* \(20x20\)|\(20x20\) and .*\(32x32\)"):
        build_loader(tmp_path / "ds", "train", batch_size=2, augment=Augment2D())
    resized = Augment2D(resize=(16, 16))
    loader = build_loader(tmp_path / "ds", "train", batch_size=2, augment=resized)
    (batch,) = loader
    assert isinstance(loader, ImageLoader) and batch["image"].shape == (2, 1, 16, 16)
    (original,) = build_loader(
        tmp_path / "ds", "train", batch_size=2, augment=resized, original=True
    )
    assert not torch.equal(batch["image"], original["image"])  # resized once more, or not


def test_a_random_resized_crop_takes_images_of_any_size(tmp_path):
    table = mixed_size_table(tmp_path / "raw")
    ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.0, train_size="32")
    cropped = Augment2D(random_resized_crop=(12, 16))  # any size in, its own size out
    for from_original in (False, True):  # copies of 32 and 20; originals of 64 and 20
        (batch,) = build_loader(
            tmp_path / "ds", "train", batch_size=2, augment=cropped, original=from_original
        )
        assert batch["image"].shape == (2, 1, 12, 16)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_device_path_batch_equals_the_cpu_path_batch(raw_copies, channels):
    """On a GPU the stored integers cross to the device and become floats there, once
    per batch; on a CPU each sample becomes floats in its thread: the same numbers."""
    augment = AUGMENT.model_copy(update={"channels": channels})
    spec = dict(batch_size=4, augment=augment, seed=3, num_workers=2, device="cpu")
    per_sample = list(build_loader(raw_copies, "train", **spec))
    loader = build_loader(raw_copies, "train", **spec)
    loader.filler.on_device = True  # the GPU's layout and pass, run here on the CPU
    per_batch = list(loader)
    for a, b in zip(per_sample, per_batch):
        assert a["key"] == b["key"]
        torch.testing.assert_close(a["image"], b["image"], atol=1e-6, rtol=0)


def test_loader_threads_run_torch_alone_and_leave_the_training_threads_setting(
    raw_copies, monkeypatch
):
    from medshard.loaders.images2d import ImageFiller

    seen = []
    fill = ImageFiller.fill

    def counting_fill(self, *args):
        seen.append(torch.get_num_threads())
        fill(self, *args)

    monkeypatch.setattr(ImageFiller, "fill", counting_fill)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as on a machine of two cores or more
    try:
        load(raw_copies, augment=Augment2D(resize=(40, 40)), num_workers=2)
        assert seen and set(seen) == {1}  # a resize's OpenMP team would spin on the cores
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
