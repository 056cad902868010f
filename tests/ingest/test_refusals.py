"""Refusals that each take one sentence, naming the file or table and the reason."""

import numpy as np
import pytest
import tifffile
from pydantic import ValidationError

from medshard.errors import BadInputError, DatasetError
from medshard.ingest.build import MemberSource, SampleSpec, ShardTask, write_shard
from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.ingest.table import LabelSpec
from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff
from medshard.ingest.video import VideoIngestOptions
from tests.conftest import ingest
from tests.real_data import copy_skimage_file, mixed_tile_table, real_nifti_table


def shard_of(path, sha256, tmp_path):
    spec = SampleSpec("k", (("image.png", MemberSource(str(path), sha256)),), size=1)
    return ShardTask(str(tmp_path / "ds"), "train", "wds/train-000000.tar", (spec,))


def test_a_source_that_changed_after_it_was_checked_is_refused(tmp_path):
    path = copy_skimage_file("camera.png", tmp_path / "camera.png")
    (tmp_path / "ds" / "wds").mkdir(parents=True)
    with pytest.raises(BadInputError, match=r"camera\.png: the file changed while it was being"):
        write_shard(shard_of(path, "0" * 64, tmp_path))
    assert list((tmp_path / "ds" / "wds").iterdir()) == []  # no half-written shard


def test_a_source_that_vanished_after_it_was_checked_is_refused(tmp_path):
    (tmp_path / "ds" / "wds").mkdir(parents=True)
    with pytest.raises(BadInputError, match=r"gone\.png: the file could not be read \("):
        write_shard(shard_of(tmp_path / "gone.png", "0" * 64, tmp_path))


def test_a_tiff_root_with_no_samples_is_refused(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("no stacks here")
    with pytest.raises(BadInputError, match=r"raw: holds no sample folders .* or TIFF stacks"):
        ingest_tiff(TiffIngestOptions(root=tmp_path / "raw", out=tmp_path / "ds", quiet=True))


def test_two_kinds_of_label_are_refused():
    with pytest.raises(ValueError, match="give at most one of --label-col, --label-cols and"):
        LabelSpec(label_col="stage", target_col="age")


def test_a_nifti_ingest_without_modalities_is_refused(tmp_path):
    table = real_nifti_table(tmp_path / "raw", names=("standard",))
    options = NiftiIngestOptions(table=table, out=tmp_path / "ds", modalities=(), quiet=True)
    with pytest.raises(BadInputError, match=r"subjects\.csv: name at least one modality column"):
        ingest_nifti(options)


def test_a_folder_named_as_an_image_is_refused(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    (tmp_path / "raw" / "folder.png").mkdir()
    table.write_text(table.read_text() + "folder.png,morula,P9\n")
    with pytest.raises(BadInputError, match=r"folder\.png: not a file \(.*labels\.csv row 8\)"):
        ingest(table, tmp_path / "ds", label_col="stage")


def test_an_unreachable_scheduler_is_named(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    with pytest.raises(DatasetError, match=r"tcp://127\.0\.0\.1:9: cannot reach the Dask sch"):
        ingest(table, tmp_path / "ds", label_col="stage", scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros((0, 16, 16), np.uint16), r"holds no voxels \(shape \(0, 16, 16\)\)"),
        (np.ones((3, 16, 16), np.complex64), "holds complex64 values; volumes of real numbers"),
    ],
    ids=["no-pages", "complex"],
)
def test_stacks_without_real_voxels_are_refused_and_skip_keeps_the_rest(tmp_path, values, message):
    root = tmp_path / "raw"
    copy_skimage_file("multipage.tif", root / "good.tif")
    tifffile.imwrite(root / "bad.tif", values)
    options = dict(root=root, workers=1, processes=False, quiet=True, val_fraction=0.0)
    with pytest.raises(BadInputError, match=message):
        ingest_tiff(TiffIngestOptions(out=tmp_path / "ds", **options))
    skipped = ingest_tiff(TiffIngestOptions(out=tmp_path / "ds", on_error="skip", **options))
    assert skipped.samples == 1 and skipped.card.rejected == 1


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"spacing": (float("nan"), 1.0, 1.0)}, "spacing"),
        ({"spacing": (0.0, 1.0, 1.0)}, "spacing"),
        ({"patch_size": (0, 4, 4)}, "patch_size"),
        ({"crops": (0, 8, 8)}, "crops"),
        ({"seed": -1}, "seed"),
    ],
)
def test_layout_values_that_mean_nothing_are_refused_naming_the_option(tmp_path, flags, field):
    with pytest.raises(ValidationError) as refused:
        TiffIngestOptions(root=tmp_path, out=tmp_path / "ds", **flags)
    assert refused.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"clip_len": 0}, "clip_len"),
        ({"clip_stride": 4}, "clip_stride"),
        ({"size": (0, 0)}, "size"),
    ],
)
def test_clip_and_frame_values_that_mean_nothing_are_refused(tmp_path, flags, field):
    with pytest.raises(ValidationError) as refused:
        VideoIngestOptions(table=tmp_path / "t.csv", out=tmp_path / "ds", video_col="v", **flags)
    assert refused.value.errors()[0]["loc"][0] == field
