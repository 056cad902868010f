"""Tiny synthetic datasets for every workload config, ingested once per session."""

from pathlib import Path

import pytest

from medshard.ingest.images import ImageIngestOptions, ingest_images
from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff
from medshard.ingest.video import VideoIngestOptions, ingest_video
from medshard.synth.images import MAMMO_CLASSES, synth_embryo_stage, synth_mammo_tiles
from medshard.synth.video import synth_ivf_timelapse
from medshard.synth.volumes import synth_fomo_mri, synth_nuclei_3d

QUIET = dict(workers=1, processes=False, quiet=True)


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-data")
    out = {}
    table = synth_embryo_stage(root / "raw/embryo", n=60, size=64)
    out["embryo-stage"] = root / "embryo"
    ingest_images(
        ImageIngestOptions(
            table=table,
            out=out["embryo-stage"],
            image_col="image_path",
            label_col="stage",
            group_col="embryo_id",
            **QUIET,
        )
    )
    table = synth_mammo_tiles(root / "raw/mammo", n=60, size=64)
    out["mammo-tiles"] = root / "mammo"
    ingest_images(
        ImageIngestOptions(
            table=table,
            out=out["mammo-tiles"],
            image_col="tile_path",
            label_cols=MAMMO_CLASSES,
            group_col="patient_id",
            **QUIET,
        )
    )
    table = synth_nuclei_3d(root / "raw/nuclei", n=12, shape=(16, 32, 32))
    out["nuclei-3d"] = root / "nuclei"
    ingest_tiff(
        TiffIngestOptions(
            root=table.parent, labels=table, out=out["nuclei-3d"], crops=(16, 16, 16), **QUIET
        )
    )
    table = synth_ivf_timelapse(root / "raw/ivf", n=6, frames=8, size=48)
    out["ivf-timelapse"] = root / "ivf"
    ingest_video(
        VideoIngestOptions(
            table=table,
            out=out["ivf-timelapse"],
            video_col="video_path",
            label_col="outcome",
            size=(32, 32),
            **QUIET,
        )
    )
    table = synth_fomo_mri(root / "raw/mri", n=10, shape=(24, 24, 16))
    nifti = dict(
        table=table, modalities=("flair", "dwi", "adc"), mask_col="seg", key_col="subject", **QUIET
    )
    out["fomo-mri"] = root / "mri"
    ingest_nifti(NiftiIngestOptions(out=out["fomo-mri"], label_col="diagnosis", folds=3, **nifti))
    out["fomo-mri-age"] = root / "mri-age"
    ingest_nifti(NiftiIngestOptions(out=out["fomo-mri-age"], target_col="age", **nifti))
    return out


@pytest.fixture
def real_mri(tmp_path):
    """nibabel's anatomical, reoriented and standard volumes with masks, ingested."""
    from tests.real_data import ingest_real_mri

    return ingest_real_mri(tmp_path), tmp_path / "raw"
