"""Datasets ingested once per session from real files, copied for each test that damages
them: scikit-image tiles (gray beside RGB, RGBA, palette, 8 and 16 bit) and nibabel's MRI
volumes with masks and 8-voxel crops."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.shards.card import read_card, write_card
from tests.conftest import ingest
from tests.real_data import mixed_tile_table, real_nifti_table


def flip_byte(path: Path, position: int) -> None:
    """Invert one byte of a file in place."""
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def reseal(dataset: Path) -> None:
    """Record the checksums of the files as they are now, as an ingest that wrote them would."""
    write_card(dataset, read_card(dataset).model_copy(update={"checksums": None}))


@pytest.fixture(scope="session")
def _real_images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real-images")
    table = mixed_tile_table(root / "raw", copies=1)
    ingest(table, root / "ds", label_col="stage", val_fraction=0.0, shard_samples=4)
    return root / "ds"


@pytest.fixture(scope="session")
def _real_volumes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real-volumes")
    table = real_nifti_table(root / "raw", names=("anatomical", "standard"))
    options = NiftiIngestOptions(
        table=table,
        out=root / "ds",
        modalities=("image",),
        mask_col="seg",
        key_col="subject",
        label_col="group",
        crops=(8, 8, 8),
        val_fraction=0.0,
        workers=1,
        processes=False,
        quiet=True,
    )
    ingest_nifti(options)
    return root / "ds"


@pytest.fixture
def real_images(_real_images, tmp_path) -> Path:
    """7 real tiles of every layout in 2 shards: a copy of its own for each test."""
    return Path(shutil.copytree(_real_images, tmp_path / "images"))


@pytest.fixture
def real_volumes(_real_volumes, tmp_path) -> Path:
    """2 real MRI volumes (33x41x25 and 4x5x7) with masks in Zarr, and 60 crops in a shard."""
    return Path(shutil.copytree(_real_volumes, tmp_path / "volumes"))
