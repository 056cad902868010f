"""`medshard derive`: an existing image dataset gets training copies, everything else kept."""

import os

import pytest
from pydantic import ValidationError

from medshard.errors import BadInputError, DatasetError
from medshard.ingest.derive import DeriveOptions, derive_training_copies
from medshard.shards.manifest import read_rejected
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from tests.conftest import ingest
from tests.real_data import mixed_tile_table
from tests.volume_data import nifti_subjects


def derive(dataset, **options):
    defaults = dict(workers=1, processes=False, quiet=True)
    return derive_training_copies(DeriveOptions(out=dataset, **{**defaults, **options}))


def samples(dataset):
    return {
        s["__key__"]: s for split in ("train", "val") for s in open_dataset(dataset).samples(split)
    }


def test_derived_copies_equal_ingest_time_copies_and_keep_everything_else(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=2)
    options = dict(label_col="stage", group_col="patient", folds=3)
    ingest(table, tmp_path / "plain", **options)
    ingest(table, tmp_path / "copied", train_size="40", **options)
    before = open_dataset(tmp_path / "plain").manifest.to_pylist()
    result = derive(tmp_path / "plain", train_size="40")
    after = open_dataset(tmp_path / "plain")
    columns = ("key", "split", "fold", "label", "source", "source_sha256", "shape", "dtype")
    assert [{c: r[c] for c in columns} for r in after.manifest.to_pylist()] == [
        {c: r[c] for c in columns} for r in before
    ]
    assert after.card.folds == 3 and after.card.options["train_size"] == [40]
    derived, reference = samples(tmp_path / "plain"), samples(tmp_path / "copied")
    for key, sample in derived.items():
        assert sample["train.npy"] == reference[key]["train.npy"]
        (image,) = [f for f in sample if str(f).startswith("image.")]
        assert sample[image] == reference[key][image]  # the archive's bytes, unchanged
    assert verify_dataset(tmp_path / "plain").ok and result.samples == 14


def test_deriving_the_same_copies_again_does_nothing(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage")
    derive(tmp_path / "ds", train_size="32,32", train_format="png")
    card = (tmp_path / "ds" / "medshard.json").read_bytes()
    assert derive(tmp_path / "ds", train_size="32,32", train_format="png").up_to_date
    assert (tmp_path / "ds" / "medshard.json").read_bytes() == card


def test_volumes_are_refused_and_left_as_they_were(tmp_path):
    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti

    table = nifti_subjects(tmp_path / "raw", n=2)
    ingest_nifti(
        NiftiIngestOptions(
            table=table,
            out=tmp_path / "ds",
            modalities=("t1",),
            workers=1,
            processes=False,
            quiet=True,
            val_fraction=0.0,
        )
    )
    card = (tmp_path / "ds" / "medshard.json").read_bytes()
    with pytest.raises(DatasetError, match="training copies are made of 2D images, not volumes"):
        derive(tmp_path / "ds", train_size=32)
    assert (tmp_path / "ds" / "medshard.json").read_bytes() == card


def test_a_copy_that_cannot_be_made_stops_derive_and_loses_no_sample(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage")
    before = _member_bytes(tmp_path / "ds")
    with pytest.raises(BadInputError, match=r"cell_gray16.*a JPEG training copy would cut"):
        derive(tmp_path / "ds", train_size=32, train_format="jpeg")
    assert _member_bytes(tmp_path / "ds") == before
    with pytest.raises(ValidationError):
        DeriveOptions(out=tmp_path / "ds", train_size=32, on_error="skip")


def test_earlier_refusals_and_the_ingest_command_are_kept(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    (tmp_path / "raw" / "batch0" / "camera_gray8.png").write_bytes(b"not a png")
    ingest(table, tmp_path / "ds", label_col="stage", on_error="skip")
    card = open_dataset(tmp_path / "ds").card
    refused = read_rejected(tmp_path / "ds").to_pylist()
    derive(tmp_path / "ds", train_size=32)
    assert read_rejected(tmp_path / "ds").to_pylist() == refused and len(refused) == 1
    derived = open_dataset(tmp_path / "ds").card
    assert derived.rejected == 1 and derived.command.startswith(card.command)


def test_many_samples_derive_without_running_out_of_file_descriptors(tmp_path):
    import resource

    table = mixed_tile_table(tmp_path / "raw", copies=12)  # 84 images
    ingest(table, tmp_path / "ds", label_col="stage")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    already_open = len(os.listdir("/proc/self/fd"))  # what earlier tests left (pools, logs)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(already_open + 48, hard), hard))
    try:
        assert derive(tmp_path / "ds", train_size=16).samples == 84
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _member_bytes(dataset):
    return {path.name: path.read_bytes() for path in sorted((dataset / "wds").iterdir())}
