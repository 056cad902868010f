"""Datasets of every kind, ingested once per session from real files where packages ship
them: scikit-image tiles (gray and RGB, 8 and 16 bit, with training copies), nibabel's MRI
volumes with masks and crops, two-modality NIfTI subjects, and mp4 videos with clips."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import skimage.data
import tifffile

from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.ingest.video import VideoIngestOptions, ingest_video
from tests.conftest import ingest, write_table
from tests.real_data import real_nifti_table, write_mixed_tiles, write_mp4
from tests.volume_data import nifti_subjects

QUIET = dict(workers=1, processes=False, quiet=True, val_fraction=0.0)
# RGB 16-bit tiles beside the mixed folder: skimage's astronaut (PNG) and cat (TIFF)
RGB16 = ("astronaut_rgb16.png", "chelsea_rgb16.tif")


def write_rgb16(folder: Path, size: int = 64) -> list[str]:
    for name, rgb in zip(RGB16, (skimage.data.astronaut(), skimage.data.chelsea())):
        rgb16 = np.ascontiguousarray(rgb[:size, :size]).astype(np.uint16) * 257
        if name.endswith(".png"):
            (folder / name).write_bytes(imagecodecs.png_encode(rgb16))
        else:
            tifffile.imwrite(folder / name, rgb16, photometric="rgb")
    return list(RGB16)


@pytest.fixture(scope="session")
def tiles_dataset(tmp_path_factory) -> Path:
    """9 real tiles (gray and RGB, 8 and 16 bit, palette, RGBA, JPEG, TIFF) with 40x40
    training copies, in a train and a val split."""
    root = tmp_path_factory.mktemp("sheet-tiles")
    names = write_mixed_tiles(root / "raw") + write_rgb16(root / "raw")
    stages = ("cleavage", "morula", "blastocyst")
    rows = [[name, stages[i % 3], f"P{i}"] for i, name in enumerate(names)]
    table = write_table(root / "raw/labels.csv", ["image_path", "stage", "patient"], rows)
    options = {**QUIET, "val_fraction": 0.3}
    ingest(table, root / "ds", label_col="stage", group_col="patient", train_size=40, **options)
    return root / "ds"


@pytest.fixture(scope="session")
def mri_dataset(tmp_path_factory) -> Path:
    """nibabel's real MRI volumes with masks (and 8-voxel crops)."""
    root = tmp_path_factory.mktemp("sheet-mri")
    table = real_nifti_table(root / "raw")
    ingest_nifti(
        NiftiIngestOptions(
            table=table,
            out=root / "ds",
            modalities=("image",),
            mask_col="seg",
            key_col="subject",
            label_col="group",
            crops=(8, 8, 8),
            patch_size=(16, 16, 16),
            **QUIET,
        )
    )
    return root / "ds"


@pytest.fixture(scope="session")
def two_modality_dataset(tmp_path_factory) -> Path:
    """4 subjects with T1 and T2 on one anisotropic grid, masks, and an age target."""
    root = tmp_path_factory.mktemp("sheet-subjects")
    table = nifti_subjects(root / "raw")
    ingest_nifti(
        NiftiIngestOptions(
            table=table,
            out=root / "ds",
            modalities=("t1", "t2"),
            mask_col="seg",
            key_col="subject",
            target_col="age",
            **QUIET,
        )
    )
    return root / "ds"


def _videos(tmp_path_factory, name: str, channels: int) -> Path:
    root = tmp_path_factory.mktemp(name)
    write_mp4(root / "raw/a.mp4", frames=31)
    write_mp4(root / "raw/b.mp4", frames=21)
    table = write_table(
        root / "raw/index.csv", ["video_path", "outcome"], [["a.mp4", "yes"], ["b.mp4", "no"]]
    )
    ingest_video(
        VideoIngestOptions(
            table=table,
            out=root / "ds",
            video_col="video_path",
            label_col="outcome",
            size=(64, 80),
            channels=channels,
            clip_len=8,
            **QUIET,
        )
    )
    return root / "ds"


@pytest.fixture(scope="session")
def video_dataset(tmp_path_factory) -> Path:
    """Two gray mp4 videos written by PyAV (31 and 21 frames at 10 fps), clips of 8."""
    return _videos(tmp_path_factory, "sheet-video", 1)


@pytest.fixture(scope="session")
def rgb_video_dataset(tmp_path_factory) -> Path:
    """The same videos kept in colour (frames stored channel last)."""
    return _videos(tmp_path_factory, "sheet-rgb-video", 3)
