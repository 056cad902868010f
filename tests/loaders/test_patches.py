"""The threaded one-copy loader of Zarr patches and clips (loaders/slots.py, patches.py,
clips.py), checked against the per-sample torch path it replaces."""

import pytest
import torch

from medshard.errors import CorruptDataError
from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.loaders.augment import Augment2D, Augment3D, augment_3d, sample_generator
from medshard.loaders.slots import zarr_loader
from medshard.loaders.sources import ClipSamples, PatchSamples, Selection
from medshard.loaders.torch_loader import LoaderIdentity
from medshard.loaders.transforms import FrameTransform, VolumeTransform
from medshard.shards.reader import open_dataset
from tests.real_data import real_nifti_table
from tests.shards.conftest import flip_byte

FULL = Augment3D(
    flip_axes=(0, 1, 2),
    rot90_xy=True,
    gamma=(0.7, 1.5),
    contrast=(0.75, 1.25),
    noise_std=0.1,
    noise_p=0.5,
)
PATCHES = [(16, 16, 16), (8, 12, 12), (30, 10, 10)]  # the last one larger than two volumes


def common(ds, **plan):
    defaults = dict(
        batch_size=4,
        seed=3,
        shuffle=True,
        uneven="pad",
        drop_last=False,
        rank=0,
        world_size=1,
        device=torch.device("cpu"),
        identity=LoaderIdentity(str(ds.path), ds.card.fingerprint, "train"),
    )
    return defaults | plan


def patch_loader(path, patch, augment=FULL, training=True, on_device=False, **plan):
    ds = open_dataset(path)
    source = PatchSamples(ds, Selection("train"), patch, samples_per_volume=3, seed=3)
    stats = ds.card.stats.model_dump()
    transform = VolumeTransform(augment, 3, training, stats, on_device=on_device)
    threads = plan.pop("threads", 2)
    return zarr_loader(source, transform, threads=threads, **common(ds, **plan)), source


def reference(source, transform, index, epoch):
    """The per-sample torch path: the patch as stored, augmented by augment_3d."""
    sample = source.load(index, epoch)
    generator = sample_generator(3, epoch, index) if transform.training else None
    image = torch.from_numpy(sample["image"])
    mask = torch.from_numpy(sample["mask"])
    return augment_3d(image, mask, transform.config, generator, transform.stats)


@pytest.fixture(scope="module", params=["lz4", "none"])
def mri(request, tmp_path_factory):
    """nibabel's real volumes (int16 beside float32, one smaller than the patches) in the
    training layout of each codec."""
    root = tmp_path_factory.mktemp(f"patches-{request.param}")
    table = real_nifti_table(root / "raw")
    options = dict(modalities=("image",), mask_col="seg", key_col="subject", workers=1)
    options |= dict(processes=False, quiet=True, val_fraction=0.0, patch_size=(16, 16, 16))
    ingest_nifti(NiftiIngestOptions(table=table, out=root / "ds", codec=request.param, **options))
    return root / "ds"


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("training", [True, False])
def test_batches_match_the_per_sample_torch_path(mri, patch, training):
    loader, source = patch_loader(mri, patch, training=training)
    seen = []
    for batch in loader:
        assert batch["image"].dtype == torch.float32 and batch["mask"].dtype == torch.uint8
        for slot, index in enumerate(batch["index"].tolist()):
            image, mask = reference(source, loader.filler.transform, index, 0)
            assert torch.allclose(batch["image"][slot], image, rtol=1e-5, atol=1e-4)
            assert torch.equal(batch["mask"][slot], mask)
            seen.append(batch["key"][slot])
    assert sorted(seen) == sorted(source.key(i) for i in range(len(source)))


def test_the_device_path_gives_the_same_batches(mri):
    # on a CPU tensor, the path a GPU takes: stored patches in, augmented after transfer
    here, _ = patch_loader(mri, (16, 16, 16))
    there, _ = patch_loader(mri, (16, 16, 16), on_device=True)
    for a, b in zip(here, there, strict=True):
        assert a["key"] == b["key"] and torch.equal(a["mask"], b["mask"])
        assert torch.allclose(a["image"], b["image"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 3])
def test_the_same_seed_gives_the_same_batches_with_any_thread_count(mri, threads):
    first = [b["image"] for b in patch_loader(mri, (8, 12, 12), threads=threads)[0]]
    again = [b["image"] for b in patch_loader(mri, (8, 12, 12), threads=2)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_ranks_read_each_patch_once_and_resume_mid_epoch(mri):
    keys = []
    for rank in range(3):
        loader, source = patch_loader(mri, (8, 8, 8), rank=rank, world_size=3, uneven="uneven")
        keys += [k for b in loader for k in b["key"]]
    assert sorted(keys) == sorted(source.key(i) for i in range(len(source)))
    loader, _ = patch_loader(mri, (8, 8, 8), batch_size=2)
    loader.set_epoch(1)
    whole = [b["image"] for b in loader]
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    it.close()
    resumed, _ = patch_loader(mri, (8, 8, 8), batch_size=2)
    resumed.load_state_dict(state)
    rest = [b["image"] for b in resumed]
    assert len(rest) == len(whole) - 1
    assert all(torch.equal(a, b) for a, b in zip(rest, whole[1:]))


def test_a_damaged_chunk_fails_the_batch_or_is_skipped(mri, tmp_path):
    import shutil

    shutil.copytree(mri, tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds")
    path = next(r["zarr_path"] for r in ds.manifest.to_pylist() if r["key"] == "anatomical")
    shard = next(p for p in (tmp_path / "ds" / path / "image/c").rglob("*") if p.is_file())
    flip_byte(shard, shard.stat().st_size - 1)  # the index's crc32c: every read of it fails
    loader, _ = patch_loader(tmp_path / "ds", (8, 8, 8), augment=Augment3D())
    with pytest.raises(CorruptDataError, match="anatomical/image"):
        list(loader)
    loader, source = patch_loader(tmp_path / "ds", (8, 8, 8), on_error="skip")
    keys = [k for b in loader for k in b["key"]]
    assert len(keys) == len(source) - 3 and loader.state.skipped_samples == 3
    assert not any(k.startswith("anatomical#") for k in keys)


@pytest.mark.parametrize("intensity", ["float16", "int16"])
def test_half_size_intensities_read_back_within_their_precision(tmp_path, intensity):
    table = real_nifti_table(tmp_path / "raw", names=("anatomical", "standard"))
    base = dict(modalities=("image",), mask_col="seg", key_col="subject", workers=1)
    base |= dict(processes=False, quiet=True, val_fraction=0.0, codec="none")
    for name, stored in (("source", "source"), ("half", intensity)):
        options = NiftiIngestOptions(table=table, out=tmp_path / name, intensity=stored, **base)
        ingest_nifti(options)
    if open_dataset(tmp_path / "half").manifest["dtype"][0].as_py() == "float32":
        pytest.skip("the ingest pipeline does not yet hand NIfTI volumes the Zarr layout")
    plain = Augment3D(normalize="none")
    exact = torch.cat([b["image"] for b in patch_loader(tmp_path / "source", (8, 8, 8), plain)[0]])
    half = torch.cat([b["image"] for b in patch_loader(tmp_path / "half", (8, 8, 8), plain)[0]])
    span = float(exact.max() - exact.min())
    assert torch.allclose(half, exact, rtol=2**-10, atol=span / 60000)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from medshard.ingest.video import VideoIngestOptions, ingest_video
    from tests.conftest import write_table
    from tests.real_data import write_mp4

    root = tmp_path_factory.mktemp("clips")
    for i, frames in enumerate((31, 12)):
        write_mp4(root / f"raw/v{i}.mp4", frames=frames)
    table = write_table(root / "raw/index.csv", ["video", "y"], [["v0.mp4", "a"], ["v1.mp4", "b"]])
    options = VideoIngestOptions(
        table=table,
        video_col="video",
        label_col="y",
        out=root / "ds",
        size=(48, 64),
        codec="none",
        val_fraction=0.0,
        workers=1,
        processes=False,
        quiet=True,
    )
    ingest_video(options)
    return root / "ds"


@pytest.mark.parametrize("sequential", [True, False])
def test_clips_match_the_per_sample_path(videos, sequential):
    ds = open_dataset(videos)
    source = ClipSamples(ds, Selection("train"), 5, clips_per_video=3, sequential=sequential)
    augment = Augment2D(flip_h=True, flip_v=True, normalize="card")
    from medshard.loaders.frame_format import stats_for, unit_stats

    transform = FrameTransform(augment, 3, True, stats_for(unit_stats(ds), 1), 1)
    loader = zarr_loader(source, transform, threads=2, **common(ds, batch_size=3))
    count = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (5, 1, 48, 64)
        for slot, index in enumerate(batch["index"].tolist()):
            expected = transform(source.load(index, 0), index, 0)["image"]
            assert torch.equal(batch["image"][slot], expected)
            assert int(batch["label"][slot]) == source.rows.labels["label"][source.videos[index]]
            count += 1
    assert count == len(source)


def test_batch_memory_is_reused_only_once_nothing_holds_it(mri):
    loader, _ = patch_loader(mri, (8, 8, 8), Augment3D(), False, batch_size=1, prefetch=1)
    held = []
    pointers = set()
    for number, batch in enumerate(loader):
        pointers.add(batch["image"].data_ptr())
        if number % 2:
            held.append((batch["image"][0], batch["image"][0].clone()))  # a view, and a copy
    assert len(pointers) < len(loader)  # dropped batches came back
    assert all(torch.equal(view, copy) for view, copy in held)  # held ones were left alone


def test_an_epochs_short_last_batch_reuses_a_full_batchs_memory(mri):
    loader, source = patch_loader(mri, (8, 8, 8), Augment3D(), False, batch_size=4, prefetch=1)
    assert len(source) % 4, "the plan needs a short last batch"
    sizes = []
    for _ in range(3):
        for batch in loader:
            sizes.append(len(batch["image"]))
    assert sizes[-1] == len(source) % 4
    # a short batch with memory of its own would push a full one out of the recycler each
    # epoch, and the next epoch would allocate (and fault in) a full one again
    kept = loader._memory._batches
    assert kept and all(len(arrays["image"]) == 4 for arrays in kept)
