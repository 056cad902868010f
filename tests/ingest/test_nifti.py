import gzip

import nibabel as nib
import numpy as np
import pytest
import zarr

from medshard.errors import BadInputError
from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from medshard.shards.zarr_store import open_sample
from tests.conftest import write_table
from tests.volume_data import AFFINES, nifti_subjects


def run(table, out, **options):
    defaults = dict(
        modalities=("t1", "t2"),
        mask_col="seg",
        key_col="subject",
        workers=1,
        processes=False,
        quiet=True,
        val_fraction=0.0,
    )
    return ingest_nifti(NiftiIngestOptions(table=table, out=out, **{**defaults, **options}))


def stored(ds_path, key):
    row = next(r for r in open_dataset(ds_path).manifest.to_pylist() if r["key"] == key)
    image, mask = open_sample(ds_path, row["zarr_path"])
    return row, image[...], None if mask is None else mask[...]


@pytest.mark.parametrize("affine", sorted(AFFINES))
def test_volumes_come_out_as_nibabels_closest_canonical(tmp_path, affine):
    table = nifti_subjects(tmp_path / "raw", affine=affine)
    run(table, tmp_path / "ds", label_col="group")
    for i in range(4):
        row, image, mask = stored(tmp_path / "ds", f"sub{i}")
        for channel, modality in enumerate(("t1", "t2")):
            canonical = nib.as_closest_canonical(
                nib.load(tmp_path / f"raw/sub{i}_{modality}.nii.gz")
            )
            # stored (c, z, y, x); nibabel's canonical array is (x, y, z)
            assert np.array_equal(image[channel].transpose(2, 1, 0), np.asarray(canonical.dataobj))
        seg = nib.as_closest_canonical(nib.load(tmp_path / f"raw/sub{i}_seg.nii.gz"))
        assert np.array_equal(mask.transpose(2, 1, 0), np.asarray(seg.dataobj))
        assert image.dtype == np.int16 and mask.dtype == np.uint8  # integer data stays exact
        attrs = zarr.open_group(str(tmp_path / "ds" / row["zarr_path"]), mode="r").attrs["medshard"]
        assert np.allclose(attrs["affine"], canonical.affine)
        assert np.allclose(attrs["original_affine"], AFFINES[affine])
        assert attrs["axis_codes"] == ["R", "A", "S"]
        zooms = canonical.header.get_zooms()
        assert row["spacing"] == pytest.approx([zooms[2], zooms[1], zooms[0]])
    assert verify_dataset(tmp_path / "ds").ok


def test_scaled_images_within_float_tolerance_and_masks_unscaled(tmp_path):
    table = nifti_subjects(tmp_path / "raw", scaled=True)
    run(table, tmp_path / "ds", target_col="age")
    _, image, mask = stored(tmp_path / "ds", "sub1")
    expected = nib.load(tmp_path / "raw/sub1_t1.nii.gz").get_fdata()
    assert image.dtype == np.float32
    assert np.allclose(image[0].transpose(2, 1, 0), expected, atol=1e-4)
    assert set(np.unique(mask)) <= {0, 1, 2}
    assert open_dataset(tmp_path / "ds").card.task == "regression"


def test_npy_volumes_are_read_as_ras_arrays(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "raw").mkdir()
    t1 = rng.normal(size=(6, 7, 8)).astype(np.float32)
    np.save(tmp_path / "raw/a_t1.npy", t1)
    np.save(tmp_path / "raw/a_t2.npy", t1 * 2)
    np.save(tmp_path / "raw/a_seg.npy", (t1 > 1).astype(np.uint8))
    table = write_table(
        tmp_path / "raw/t.csv",
        ["subject", "t1", "t2", "seg"],
        [["a", "a_t1.npy", "a_t2.npy", "a_seg.npy"]],
    )
    run(table, tmp_path / "ds")
    row, image, mask = stored(tmp_path / "ds", "a")
    assert np.array_equal(image[1].transpose(2, 1, 0), t1 * 2) and row["spacing"] == [1, 1, 1]


def test_resample_puts_a_modality_on_the_first_ones_grid(tmp_path):
    table = nifti_subjects(tmp_path / "raw", n=2)
    t2 = nib.load(tmp_path / "raw/sub0_t2.nii.gz")
    shifted = t2.affine.copy()
    shifted[0, 3] += 1.0  # one voxel along x
    nib.save(nib.Nifti1Image(np.asarray(t2.dataobj), shifted), tmp_path / "raw/sub0_t2.nii.gz")
    with pytest.raises(BadInputError, match=r"sub0_t2\.nii\.gz: modality 't2' .* pass --resample"):
        run(table, tmp_path / "ds")
    run(table, tmp_path / "ds", resample=True)
    _, image, _ = stored(tmp_path / "ds", "sub0")
    original = np.asarray(t2.dataobj).transpose(2, 1, 0)
    assert image.dtype == np.float32
    assert np.allclose(image[1, :, :, 1:], original[:, :, :-1], atol=1e-3)  # one voxel along x


def test_ingest_on_two_worker_processes(tmp_path):
    table = nifti_subjects(tmp_path / "raw", n=4)
    result = run(table, tmp_path / "ds", workers=2, processes=True, crops=(4, 4, 4))
    assert result.samples == 4 and verify_dataset(tmp_path / "ds").ok


def truncate_gz(raw):
    path = raw / "sub1_t1.nii.gz"
    path.write_bytes(path.read_bytes()[:300])


def mask_shape(raw):
    nib.save(
        nib.Nifti1Image(np.zeros((10, 14, 9), np.uint8), AFFINES["canonical"]),
        raw / "sub1_seg.nii.gz",
    )


def mask_affine(raw):
    nib.save(
        nib.Nifti1Image(np.zeros((10, 14, 8), np.uint8), np.diag([2.0, 2, 2, 1])),
        raw / "sub1_seg.nii.gz",
    )


def float_mask(raw):
    nib.save(
        nib.Nifti1Image(np.full((10, 14, 8), 0.3, np.float32), AFFINES["canonical"]),
        raw / "sub1_seg.nii.gz",
    )


def two_d(raw):
    nib.save(
        nib.Nifti1Image(np.zeros((10, 14), np.int16), AFFINES["canonical"]), raw / "sub1_t2.nii.gz"
    )


def nan_voxels(raw):
    data = np.ones((10, 14, 8), np.float32)
    data[1, 2, 3] = np.inf
    nib.save(nib.Nifti1Image(data, AFFINES["canonical"]), raw / "sub1_t2.nii.gz")


def missing_file(raw):
    (raw / "sub1_t2.nii.gz").unlink()


def not_gzip(raw):
    with gzip.open(raw / "sub1_t2.nii.gz", "wb") as handle:
        handle.write(b"not a nifti header at all")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncate_gz, r"sub1_t1\.nii\.gz: cannot read the volume, it is truncated or corrupt"),
        (not_gzip, r"sub1_t2\.nii\.gz: cannot read the volume, it is truncated or corrupt"),
        (
            mask_shape,
            r"sub1_seg\.nii\.gz: mask shape \(10, 14, 9\) differs from image shape \(10, 14, 8\)",
        ),
        (mask_affine, r"sub1_seg\.nii\.gz: mask affine differs from the image's affine"),
        (float_mask, r"subjects\.csv row 2: the mask holds non-integer values"),
        (two_d, r"sub1_t2\.nii\.gz: is 2D \(shape \(10, 14\)\), not a volume"),
        (nan_voxels, r"subjects\.csv row 2: holds 1 NaN or Inf voxels"),
        (missing_file, r"sub1_t2\.nii\.gz: file not found \(.*subjects\.csv row 2\)"),
    ],
    ids=[
        "truncated-gzip",
        "corrupt-header",
        "mask-shape",
        "mask-affine",
        "float-mask",
        "2d",
        "nan",
        "missing-file",
    ],
)
def test_bad_subjects_are_refused_and_nothing_is_written(tmp_path, damage, message):
    table = nifti_subjects(tmp_path / "raw")
    damage(tmp_path / "raw")
    with pytest.raises(BadInputError, match=message):
        run(table, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_skip_records_the_bad_subject(tmp_path):
    table = nifti_subjects(tmp_path / "raw")
    truncate_gz(tmp_path / "raw")
    result = run(table, tmp_path / "ds", on_error="skip")
    assert result.samples == 3 and result.card.rejected == 1


def zarr_json(ds_path, key: str, array: str = "image") -> dict:
    import json

    row = next(r for r in open_dataset(ds_path).manifest.to_pylist() if r["key"] == key)
    return json.loads((ds_path / row["zarr_path"] / array / "zarr.json").read_text())


def test_the_training_layout_by_default_uncompressed_with_crc32c(tmp_path):
    table = nifti_subjects(tmp_path / "raw")
    run(table, tmp_path / "ds", patch_size=(8, 8, 8))
    for array in ("image", "labels/mask"):
        meta = zarr_json(tmp_path / "ds", "sub0", array)
        (sharding,) = meta["codecs"]
        config = sharding["configuration"]
        assert [c["name"] for c in config["codecs"]] == ["bytes", "crc32c"]
        chunks, shape = config["chunk_shape"], meta["shape"]
        assert chunks[-3] <= 8 and chunks[-2:] == shape[-2:]  # a patch deep, whole planes
        assert array == "labels/mask" or chunks[0] == shape[0]  # every channel in a chunk
        assert meta["chunk_grid"]["configuration"]["chunk_shape"] == meta["shape"]  # one shard
    card = open_dataset(tmp_path / "ds").card
    assert card.options["codec"] == "none" and card.options["intensity"] == "source"
    assert verify_dataset(tmp_path / "ds").ok


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_codec_recorded_in_the_card_and_the_arrays(tmp_path, codec):
    table = nifti_subjects(tmp_path / "raw")
    run(table, tmp_path / "ds", codec=codec)
    assert open_dataset(tmp_path / "ds").card.options["codec"] == codec
    inner = zarr_json(tmp_path / "ds", "sub0")["codecs"][0]["configuration"]["codecs"]
    assert inner[1]["configuration"]["cname"] == codec and inner[-1]["name"] == "crc32c"
    assert verify_dataset(tmp_path / "ds").ok


def test_float16_intensities_of_real_volumes_within_their_precision(tmp_path):
    from tests.real_data import real_nifti_table

    table = real_nifti_table(tmp_path / "raw", names=("anatomical", "standard"))
    real = dict(modalities=("image",), key_col="subject", mask_col="seg")
    run(table, tmp_path / "exact", **real)
    run(table, tmp_path / "half", intensity="float16", codec="lz4", **real)
    for key in ("anatomical", "standard"):
        row, exact, mask = stored(tmp_path / "exact", key)
        half_row, half, half_mask = stored(tmp_path / "half", key)
        assert np.array_equal(mask, half_mask)
        if exact.dtype.kind == "f":
            assert half_row["dtype"] == "float16"
            assert np.allclose(half.astype(np.float32), exact, rtol=2**-10)
        else:  # integer images are stored as they are
            assert half_row["dtype"] == row["dtype"] and np.array_equal(half, exact)
    assert verify_dataset(tmp_path / "half").ok


def test_int16_intensities_with_crops_are_refused(tmp_path):
    from pydantic import ValidationError

    table = nifti_subjects(tmp_path / "raw")
    with pytest.raises(ValidationError, match="int16 intensities keep their scale beside"):
        run(table, tmp_path / "ds", intensity="int16", crops=(4, 4, 4))
    assert not (tmp_path / "ds").exists()


def test_a_cifti_file_is_named_as_one_not_as_a_corrupt_volume():
    from pathlib import Path

    from medshard.ingest.volume_read import read_nifti_volume

    cifti = Path(nib.__file__).parent / "tests/data/row_major.dconn.nii"  # nibabel's own
    with pytest.raises(ValueError, match="^it is a Cifti2 file, not a volume with an affine$"):
        read_nifti_volume(cifti, is_mask=False)


def one_extreme_voxel(table) -> None:
    """The first subject's image as float32 with one voxel of 1e9 (a scanner artefact)."""
    rows = [line.split(",") for line in table.read_text().splitlines()]
    path = table.parent / rows[1][rows[0].index("image")]
    source = nib.load(path)
    data = np.asarray(source.dataobj, np.float32)
    data.flat[0] = 1e9
    nib.save(nib.Nifti1Image(data, source.affine), path)


def test_a_volume_its_stored_type_would_blur_is_refused_naming_its_row(tmp_path):
    """nibabel's real volumes as floats, one with a single voxel of 1e9: int16 storage is
    refused for that subject alone, naming its row; skip keeps the others."""
    from tests.real_data import real_nifti_table

    table = real_nifti_table(tmp_path / "raw", names=("anatomical", "standard"))
    real = dict(modalities=("image",), key_col="subject", mask_col="seg")
    one_extreme_voxel(table)
    with pytest.raises(
        BadInputError, match=r"subjects\.csv row 1: anatomical: int16 storage would"
    ):
        run(table, tmp_path / "ds", intensity="int16", **real)
    assert not (tmp_path / "ds").exists()
    result = run(table, tmp_path / "ds", intensity="int16", on_error="skip", **real)
    assert result.samples == 1 and result.card.rejected == 1


def test_one_extreme_voxel_does_not_flatten_the_normalised_patches(tmp_path):
    """nibabel's anatomical MRI with one voxel of 1e9: the card's clipped moments keep
    its patches' contrast where the plain std (millions) made every patch one value."""
    from medshard.loaders.augment import Augment3D
    from medshard.loaders.build import build_loader
    from tests.real_data import real_nifti_table

    table = real_nifti_table(tmp_path / "raw", names=("anatomical",))
    one_extreme_voxel(table)
    run(table, tmp_path / "ds", modalities=("image",), key_col="subject", mask_col="seg")
    stats = open_dataset(tmp_path / "ds").card.stats
    assert stats.std[0] > 1e5 and stats.clipped_std[0] < 1e4
    loader = build_loader(
        tmp_path / "ds",
        "train",
        batch_size=2,
        patch_size=(8, 16, 16),
        num_workers=1,
        augment=Augment3D(normalize="card"),
        training=False,
    )
    image = next(iter(loader))["image"]
    assert image.std() > 0.3  # unit-scale contrast, not a constant
