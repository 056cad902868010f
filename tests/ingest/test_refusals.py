"""Refusals that each take one sentence, naming the file or table and the reason."""

import pytest

from medshard.errors import BadInputError
from medshard.ingest.build import MemberSource, SampleSpec, ShardTask, write_shard
from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.ingest.table import LabelSpec
from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff
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
