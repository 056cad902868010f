"""The one ingest pipeline on real files: keys unique across inputs, reruns that notice
changed inputs, refusals that keep the rest of the run."""

import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
import tifffile
from PIL import Image

from medshard.bench import bench_dataset
from medshard.errors import BadInputError, DatasetError
from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti, load_nifti_subject
from medshard.ingest.samples import Job, read_jobs
from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff
from medshard.ingest.video import VideoIngestOptions, ingest_video
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from medshard.shards.zarr_store import open_sample
from tests.conftest import ingest, write_table
from tests.real_data import copy_skimage_file, mixed_tile_table, real_nifti_table, write_mp4


def run_tiff(root, out, **options):
    defaults = dict(workers=1, processes=False, quiet=True, val_fraction=0.0)
    return ingest_tiff(TiffIngestOptions(root=root, out=out, **{**defaults, **options}))


def run_nifti(table, out, **options):
    defaults = dict(
        modalities=("image",),
        mask_col="seg",
        key_col="subject",
        workers=1,
        processes=False,
        quiet=True,
        val_fraction=0.0,
    )
    return ingest_nifti(NiftiIngestOptions(table=table, out=out, **{**defaults, **options}))


def stack_beside_folder(root):
    """skimage's multi-page TIFF as the stack `s1.tif`, and its pages as the slice folder
    `s1/raw/` beside it: two samples whose keys are both 's1'."""
    stack = tifffile.imread(copy_skimage_file("multipage.tif", root / "s1.tif"))
    (root / "s1" / "raw").mkdir(parents=True)
    for z, plane in enumerate(stack[::-1]):  # the folder holds the slices reversed
        tifffile.imwrite(root / "s1" / "raw" / f"z{z}.tif", plane)
    tifffile.imwrite(root / "s2.tif", stack[::-1])
    return stack


def test_a_stack_and_a_folder_with_one_key_are_refused(tmp_path):
    stack_beside_folder(tmp_path / "raw")
    with pytest.raises(BadInputError, match=r"s1\.tif: key 's1' is also the key of .*s1"):
        run_tiff(tmp_path / "raw", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_skipping_a_key_collision_keeps_one_sample_per_key(tmp_path):
    stack = stack_beside_folder(tmp_path / "raw")
    result = run_tiff(tmp_path / "raw", tmp_path / "ds", on_error="skip")
    keys = open_dataset(tmp_path / "ds").manifest.column("key").to_pylist()
    assert sorted(keys) == ["s1", "s2"] and result.card.rejected == 1
    rejected = pq.read_table(tmp_path / "ds" / "rejected.parquet").to_pylist()
    assert rejected[0]["source"].endswith("s1.tif") and "'s1'" in rejected[0]["reason"]
    assert verify_dataset(tmp_path / "ds").ok
    image, _ = open_sample(tmp_path / "ds", "zarr/s1")
    assert np.array_equal(image[0], stack[::-1])  # the folder was kept, the stack refused


def test_rerun_after_fixing_a_rejected_image_rebuilds(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    tile = tmp_path / "raw" / "batch0" / "camera_gray8.png"
    good = tile.read_bytes()
    tile.write_bytes(good[: len(good) // 2])  # truncated
    first = ingest(table, tmp_path / "ds", label_col="stage", on_error="skip")
    assert first.card.rejected == 1 and first.samples == 6
    tile.write_bytes(good)
    fixed = ingest(table, tmp_path / "ds", label_col="stage", on_error="skip")
    assert not fixed.up_to_date and fixed.card.rejected == 0 and fixed.samples == 7
    again = ingest(table, tmp_path / "ds", label_col="stage", on_error="skip")
    assert again.up_to_date


def test_rerun_with_other_options_still_needs_overwrite(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage")
    with pytest.raises(DatasetError, match="holds a different dataset"):
        ingest(table, tmp_path / "ds", label_col="stage", seed=7)


def test_rerun_after_editing_an_image_stores_the_new_bytes(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage")
    tile = tmp_path / "raw" / "batch0" / "camera_gray8.png"
    Image.fromarray(skimage.data.coins()[:64, :64]).save(tile)
    edited = ingest(table, tmp_path / "ds", label_col="stage")
    assert not edited.up_to_date
    rows = open_dataset(tmp_path / "ds").manifest.to_pylist()
    row = next(r for r in rows if r["source"] == ["batch0/camera_gray8.png"])
    assert row["source_sha256"] == [hashlib.sha256(tile.read_bytes()).hexdigest()]
    assert verify_dataset(tmp_path / "ds").ok


def zero_voxel_size(path):
    """nibabel's anatomical.nii with the z column of its affine zeroed in the header."""
    img = nib.load(path, mmap=False)
    header = img.header.copy()
    header["pixdim"][3] = 0
    header["srow_z"][:3] = 0
    nib.Nifti1Image(np.asarray(img.dataobj), None, header).to_filename(path)


def test_a_zero_voxel_size_is_refused_and_skip_keeps_the_other_subjects(tmp_path):
    table = real_nifti_table(tmp_path / "raw")
    zero_voxel_size(tmp_path / "raw" / "anatomical.nii")
    with pytest.raises(
        BadInputError, match=r"anatomical\.nii: its affine gives a voxel size of zero"
    ):
        run_nifti(table, tmp_path / "ds")
    result = run_nifti(table, tmp_path / "ds", on_error="skip")
    assert result.samples == 2 and result.card.rejected == 1


def test_a_mask_label_beyond_uint32_is_refused_not_wrapped(tmp_path):
    table = real_nifti_table(tmp_path / "raw", names=("anatomical", "standard"))
    seg = tmp_path / "raw" / "standard_seg.nii.gz"
    img = nib.load(seg, mmap=False)
    mask = np.asarray(img.dataobj).astype(np.int64)
    mask[0, 0, 0] = 5_000_000_000
    nib.save(nib.Nifti1Image(mask, img.affine, dtype=np.int64), seg)
    with pytest.raises(BadInputError, match=r"the mask holds label 5000000000, above the largest"):
        run_nifti(table, tmp_path / "ds")


@pytest.mark.parametrize("outside", ["../elsewhere/x.png", "ABSOLUTE"])
def test_paths_outside_the_root_are_refused_unless_allowed(tmp_path, outside):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    elsewhere = tmp_path / "elsewhere" / "x.png"
    elsewhere.parent.mkdir()
    shutil.copyfile(tmp_path / "raw" / "batch0" / "ihc_rgb8.png", elsewhere)
    path = str(elsewhere) if outside == "ABSOLUTE" else outside
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines, f"{path},morula,P9"]) + "\n")
    with pytest.raises(BadInputError, match=r"row 8: the path .* leads outside the root folder"):
        ingest(table, tmp_path / "ds", label_col="stage")
    result = ingest(table, tmp_path / "ds", label_col="stage", allow_outside_root=True)
    assert result.samples == 8


def test_an_out_around_a_file_reached_outside_the_root_is_refused(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    elsewhere = tmp_path / "elsewhere" / "x.png"
    elsewhere.parent.mkdir()
    shutil.copyfile(tmp_path / "raw" / "batch0" / "ihc_rgb8.png", elsewhere)
    table.write_text(table.read_text() + f"{elsewhere},morula,P9\n")
    with pytest.raises(DatasetError, match=r"--out contains .*x\.png, which this ingest reads"):
        ingest(table, tmp_path / "elsewhere", label_col="stage", allow_outside_root=True)
    assert elsewhere.is_file()


def test_volume_sources_are_relative_to_the_root_whatever_the_working_directory(
    tmp_path, monkeypatch
):
    real_nifti_table(tmp_path / "raw", names=("anatomical", "reoriented"))
    monkeypatch.chdir(tmp_path)
    run_nifti(Path("raw/subjects.csv"), Path("ds"))
    rows = open_dataset(tmp_path / "ds").manifest.to_pylist()
    assert sorted(r["source"] for r in rows) == [
        ["anatomical.nii", "anatomical_seg.nii.gz"],
        ["reoriented.nii", "reoriented_seg.nii.gz"],
    ]
    monkeypatch.chdir(tmp_path / "raw")  # the baseline finds the sources from anywhere
    engine, baseline = bench_dataset(
        tmp_path / "ds", batch_size=2, workers=0, repetitions=1, patch_size=(8, 8, 8)
    )
    assert baseline is not None and baseline.samples_per_s > 0


def test_window_keys_that_clash_with_a_sample_key_are_refused(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    for name in ("a", "a_t0"):
        write_mp4(root / f"{name}.mp4", frames=9, size=(32, 32))
    write_table(root / "index.csv", ["video_path"], [["a.mp4"], ["a_t0.mp4"]])
    options = dict(video_col="video_path", clip_len=4, workers=1, processes=False, quiet=True)
    with pytest.raises(BadInputError, match=r"a\.mp4: its clip key 'a_t0' is the key of another"):
        ingest_video(VideoIngestOptions(table=root / "index.csv", out=tmp_path / "ds", **options))
    result = ingest_video(
        VideoIngestOptions(
            table=root / "index.csv", out=tmp_path / "ds", on_error="skip", **options
        )
    )
    assert result.card.rejected == 1 and verify_dataset(tmp_path / "ds").ok
    assert not (tmp_path / "ds" / "zarr" / "a").exists()


def test_a_folder_with_a_foreign_medshard_json_is_never_replaced(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "medshard.json").write_text('{"my": "settings"}')
    (thesis / "chapter1.tex").write_text("precious")
    with pytest.raises(DatasetError, match="holds no medshard dataset"):
        ingest(table, thesis, label_col="stage", overwrite=True)
    assert (thesis / "chapter1.tex").read_text() == "precious"


def test_a_failure_to_store_stops_the_ingest_instead_of_refusing_the_input(tmp_path):
    table = real_nifti_table(tmp_path / "raw", names=("standard",))
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    job = Job(
        row=0,
        key="standard",
        source="standard",
        group="standard",
        split=None,
        parsed={},
        files=(),
        read=load_nifti_subject,
        args=((str(table.parent / "standard.nii.gz"),), ("image",), None, False),
    )
    with pytest.raises(OSError):
        read_jobs([job], str(not_a_folder), (8, 8, 8), None)


def test_a_sample_without_a_mask_beside_masked_ones_is_refused(tmp_path):
    stack = tifffile.imread(copy_skimage_file("multipage.tif", tmp_path / "raw" / "plain.tif"))
    for folder, planes in (("raw", stack), ("mask", (stack > stack.mean()).astype("uint8"))):
        (tmp_path / "raw" / "s1" / folder).mkdir(parents=True)
        for z, plane in enumerate(planes):
            tifffile.imwrite(tmp_path / "raw" / "s1" / folder / f"z{z}.tif", plane)
    with pytest.raises(BadInputError, match=r"plain\.tif: has no mask, while other samples"):
        run_tiff(tmp_path / "raw", tmp_path / "ds")
    result = run_tiff(tmp_path / "raw", tmp_path / "ds", on_error="skip")
    assert result.samples == 1 and result.card.rejected == 1
    assert not (tmp_path / "ds" / "zarr" / "plain").exists()


def test_more_folds_than_subjects_are_refused(tmp_path):
    table = real_nifti_table(tmp_path / "raw")
    with pytest.raises(ValueError, match="4 folds need at least 4 groups .* and there are 3"):
        run_nifti(table, tmp_path / "ds", folds=4)
    assert not (tmp_path / "ds").exists()


def test_classes_named_twice_are_refused(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    with pytest.raises(ValueError, match="--classes names 'morula' more than once"):
        ingest(table, tmp_path / "ds", label_col="stage", classes=("morula", "morula", "x"))
