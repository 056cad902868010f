"""build_loader end to end on CPU: exact cover, determinism, resume, alignment, backends."""

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from medshard.codecs import decode_image
from medshard.errors import DatasetError
from medshard.loaders import Augment2D, Augment3D, build_loader, dali_available
from medshard.shards.reader import open_dataset

RAW = Augment2D(normalize="none")


def keys_of(loader) -> list[str]:
    return [key for batch in loader for key in batch["key"]]


def test_two_ranks_two_workers_cover_each_key_once(image_dataset):
    seen = Counter()
    lengths = set()
    for rank in range(2):
        loader = build_loader(
            image_dataset,
            "train",
            batch_size=4,
            backend="torch",
            rank=rank,
            world_size=2,
            num_workers=2,
            augment=RAW,
        )
        loader.set_epoch(1)
        batches = list(loader)
        lengths.add(len(batches))
        assert len(batches) == len(loader)
        seen.update(k for b in batches for k in b["key"])
    assert len(seen) == 24 and set(seen.values()) == {1} and lengths == {3}


def test_two_real_processes_cover_each_key_once(image_dataset, tmp_path):
    script = (
        "import sys; from medshard.loaders import build_loader, Augment2D\n"
        f"loader = build_loader({str(image_dataset)!r}, 'train', batch_size=4, backend='torch',"
        " num_workers=2, augment=Augment2D(normalize='none'))\n"
        "print('\\n'.join(k for b in loader for k in b['key']))\n"
    )
    keys = Counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            text=True,
            env={"RANK": str(r), "WORLD_SIZE": "2", "PATH": "/usr/bin:/bin"},
        )
        for r in range(2)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        keys.update(out.split())
    assert len(keys) == 24 and set(keys.values()) == {1}


def test_same_seed_same_batches_other_epoch_other_order(image_dataset):
    augment = Augment2D(flip_h=True, rot90=True, brightness=0.2)
    first = build_loader(
        image_dataset, "train", batch_size=6, backend="torch", seed=3, augment=augment
    )
    second = build_loader(
        image_dataset, "train", batch_size=6, backend="torch", seed=3, augment=augment
    )
    a, b = list(first), list(second)
    assert [x["key"] for x in a] == [x["key"] for x in b]
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))
    first.set_epoch(1)
    assert keys_of(first) != [k for x in a for k in x["key"]]


def test_resume_yields_exactly_the_remaining_batches(image_dataset):
    reference = build_loader(image_dataset, "train", batch_size=4, backend="torch", seed=1)
    reference.set_epoch(2)
    expected = list(reference)
    interrupted = build_loader(image_dataset, "train", batch_size=4, backend="torch", seed=1)
    interrupted.set_epoch(2)
    iterator = iter(interrupted)
    for _ in range(2):
        next(iterator)
    state = interrupted.state_dict()
    assert state == {
        "epoch": 2,
        "position": 8,
        "num_samples": 24,
        "seed": 1,
        "shuffle": True,
        "shuffle_shards": None,
        "world_size": 1,
        "batch_size": 4,
        "dataset": open_dataset(image_dataset).card.fingerprint,
        "split": "train",
        "fold": None,
        "rank_state": None,
    }
    resumed = build_loader(image_dataset, "train", batch_size=4, backend="torch", seed=1)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert [b["key"] for b in rest] == [b["key"] for b in expected[2:]]
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(rest, expected[2:]))


def test_sixteen_bit_values_survive_the_torch_path(image_dataset):
    ds = open_dataset(image_dataset)
    stored = {s["__key__"]: decode_image(s["image.png"], "png") for s in ds.samples("train")}
    batch = next(
        iter(build_loader(ds, "train", batch_size=4, backend="torch", augment=RAW, training=False))
    )
    for key, image in zip(batch["key"], batch["image"]):
        restored = torch.round(image[0] * 65535).to(torch.int64).numpy()
        assert np.array_equal(restored, stored[key].astype(np.int64)) and stored[key].max() > 255


@pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only")
def test_dali_and_torch_backends_give_the_same_keys_and_labels(image_dataset):
    def labelled(backend):
        loader = build_loader(
            image_dataset,
            "train",
            batch_size=5,
            backend=backend,
            augment=RAW,
            device="cpu",
            uneven="drop",
            training=False,
        )
        return {k: int(v) for b in loader for k, v in zip(b["key"], b["label"])}

    dali, torch_ = labelled("dali"), labelled("torch")
    assert dali == torch_ and len(dali) == 24


@pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only")
def test_dali_cpu_pipeline_keeps_sixteen_bit_values(image_dataset):
    ds = open_dataset(image_dataset)
    stored = {s["__key__"]: decode_image(s["image.png"], "png") for s in ds.samples("train")}
    loader = build_loader(
        ds, "train", batch_size=4, backend="dali", augment=RAW, device="cpu", training=False
    )
    batch = next(iter(loader))
    for key, image in zip(batch["key"], batch["image"]):
        assert np.array_equal(torch.round(image[0] * 65535).to(torch.int64).numpy(), stored[key])


@pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only")
def test_dali_ranks_cover_each_key_once_and_resume(image_dataset):
    seen = Counter()
    for rank in range(2):
        loader = build_loader(
            image_dataset,
            "train",
            batch_size=4,
            backend="dali",
            rank=rank,
            world_size=2,
            device="cpu",
            augment=RAW,
        )
        seen.update(keys_of(loader))
    assert len(seen) == 24 and set(seen.values()) == {1}
    whole = keys_of(
        build_loader(image_dataset, "train", batch_size=4, backend="dali", device="cpu")
    )
    resumed = build_loader(image_dataset, "train", batch_size=4, backend="dali", device="cpu")
    resumed.load_state_dict(resumed.state_dict() | {"position": 12})
    assert keys_of(resumed) == whole[12:]


def mask_of(image: np.ndarray) -> np.ndarray:
    return (image > 800).astype(np.int64) + (image > 950)


@pytest.mark.parametrize("patches", [True, False], ids=["zarr-patches", "shard-crops"])
def test_3d_augmentation_keeps_image_and_mask_aligned(volume_dataset, patches):
    augment = Augment3D(flip_axes=(0, 1, 2), rot90_xy=True, normalize="none")
    options = (
        dict(patch_size=(8, 12, 12), samples_per_volume=3, foreground_prob=0.5) if patches else {}
    )
    loader = build_loader(volume_dataset, "train", batch_size=4, augment=augment, **options)
    flipped = 0
    for batch in loader:
        image, mask = batch["image"][:, 0].numpy(), batch["mask"].numpy()
        assert np.array_equal(mask, mask_of(image))  # still the same function of the image
        flipped += 1
    assert flipped == len(loader) > 0


def test_patches_are_centred_on_foreground_when_asked(tmp_path):
    from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff
    from tests.volume_data import volume, write_slices

    for i in range(2):
        image, _ = volume(i)
        mask = np.zeros(image.shape, np.uint8)
        mask[6, 10, 12] = 1  # one foreground voxel, away from the borders
        write_slices(tmp_path / f"raw/v{i}/raw", image)
        write_slices(tmp_path / f"raw/v{i}/mask", mask)
    ingest_tiff(
        TiffIngestOptions(
            root=tmp_path / "raw",
            out=tmp_path / "ds",
            val_fraction=0.0,
            workers=1,
            processes=False,
            quiet=True,
        )
    )

    def hits(probability):
        loader = build_loader(
            tmp_path / "ds",
            "train",
            batch_size=8,
            patch_size=(4, 4, 4),
            samples_per_volume=16,
            foreground_prob=probability,
            augment=Augment3D(normalize="none"),
            num_workers=0,
        )
        return [int(m.sum()) for b in loader for m in b["mask"]]

    assert hits(1.0) == [1] * 32  # every patch holds the voxel
    assert sum(hits(0.0)) < 16  # uniform patches rarely do


def test_bad_requests_fail_before_the_first_batch(image_dataset, volume_dataset):
    with pytest.raises(DatasetError, match="no split 'test'; the splits are train"):
        build_loader(image_dataset, "test", batch_size=2)
    with pytest.raises(DatasetError, match="has no field 'mask'"):
        build_loader(image_dataset, "train", batch_size=2, fields=("image", "mask"))
    with pytest.raises(ValueError, match=r"3D augmentation \(Augment3D\) does not fit images"):
        build_loader(image_dataset, "train", batch_size=2, augment=Augment3D())
    with pytest.raises(ValueError, match=r"2D augmentation \(Augment2D\) does not fit volumes"):
        build_loader(volume_dataset, "train", batch_size=2, augment=Augment2D())


@pytest.fixture
def damaged_copy(image_dataset, tmp_path):
    import shutil

    shutil.copytree(image_dataset, tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds")
    row = ds.manifest.to_pylist()[7]
    shard = tmp_path / "ds" / row["shard"]
    data = bytearray(shard.read_bytes())
    data[row["offset"] + 512 + 40 : row["offset"] + 512 + 400] = b"\x00" * 360  # inside the PNG
    shard.write_bytes(bytes(data))
    return tmp_path / "ds", row


def test_a_corrupt_sample_fails_naming_shard_and_key(damaged_copy):
    path, row = damaged_copy
    loader = build_loader(path, "train", batch_size=4, backend="torch", num_workers=0)
    # caught by the sample's checksum, or by the decoder where no checksum was recorded
    with pytest.raises(DatasetError, match=rf"{row['shard']}: sample '{row['key']}'"):
        list(loader)


def test_a_corrupt_sample_is_skipped_and_counted_when_asked(damaged_copy):
    path, row = damaged_copy
    loader = build_loader(
        path, "train", batch_size=4, backend="torch", num_workers=0, on_error="skip"
    )
    keys = keys_of(loader)
    assert row["key"] not in keys and len(keys) == 23 and loader.state.skipped_samples == 1


def test_the_samples_beside_a_skipped_one_are_whole(damaged_copy, image_dataset):
    path, row = damaged_copy
    # jobs of several samples (16 in a batch, two threads): a skipped one shares its job
    spec = dict(batch_size=16, backend="torch", num_workers=0, augment=Augment2D(contrast=0.3))

    def images(dataset, **options) -> dict:
        loader = build_loader(dataset, "train", **spec, **options)
        return {k: x for batch in loader for k, x in zip(batch["key"], batch["image"])}

    skipped, whole = images(path, on_error="skip"), images(image_dataset)
    assert skipped.keys() == whole.keys() - {row["key"]}
    assert all(torch.equal(skipped[key], whole[key]) for key in skipped)


def test_a_truncated_shard_fails_naming_it(image_dataset, tmp_path):
    import shutil

    shutil.copytree(image_dataset, tmp_path / "ds")
    shard = sorted((tmp_path / "ds/wds").glob("*.tar"))[-1]
    shard.write_bytes(shard.read_bytes()[:2000])
    with pytest.raises(DatasetError, match=rf"{shard.name}: the shard is truncated before sample"):
        list(build_loader(tmp_path / "ds", "train", batch_size=4, backend="torch", num_workers=0))


def test_video_clips_from_zarr_and_from_shards(tmp_path):
    from medshard.ingest.video import VideoIngestOptions, ingest_video
    from medshard.synth.video import synth_ivf_timelapse

    table = synth_ivf_timelapse(tmp_path / "raw", n=3, frames=10, size=48)
    ingest_video(
        VideoIngestOptions(
            table=table,
            video_col="video_path",
            label_col="outcome",
            out=tmp_path / "ds",
            size=(32, 32),
            clip_len=4,
            val_fraction=0.0,
            workers=1,
            processes=False,
            quiet=True,
        )
    )
    random_clips = build_loader(
        tmp_path / "ds", "train", batch_size=2, clip_len=4, clips_per_video=2, augment=RAW
    )
    batches = list(random_clips)
    assert sum(len(b["key"]) for b in batches) == 6
    assert batches[0]["image"].shape[1:] == (4, 1, 32, 32)
    stored = build_loader(tmp_path / "ds", "train", batch_size=2, augment=RAW)
    assert sum(len(b["key"]) for b in stored) == 3 * 2  # two back-to-back clips of 4 in 10 frames


@pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only")
def test_dali_reads_npy_crops_with_fn_decoders_numpy(volume_dataset):
    augment = Augment3D(flip_axes=(0, 1, 2), rot90_xy=True, normalize="none")

    def labelled(backend):
        loader = build_loader(
            volume_dataset,
            "train",
            batch_size=3,
            backend=backend,
            augment=augment,
            device="cpu",
            uneven="drop",
            training=True,
        )
        found = {}
        for batch in loader:
            image, mask = batch["image"][:, 0].numpy(), batch["mask"].numpy()
            assert np.array_equal(mask, mask_of(image))  # one spatial draw for image and mask
            found.update({k: int(v) for k, v in zip(batch["key"], batch["label"])})
        return found

    dali, torch_ = labelled("dali"), labelled("torch")
    assert dali == torch_ and len(dali) == 4 * 2 * 2 * 2  # 4 volumes, 2x2x2 crops each
