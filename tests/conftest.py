"""Shared fixtures: tiny image tables in every format the ingest accepts, from fixed seeds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medshard.ingest.images import ImageIngestOptions, ingest_images

# (suffix, dtype, channels): every 2D image kind `ingest images` accepts.
IMAGE_KINDS = {
    "png8-gray": (".png", np.uint8, 1),
    "png8-rgb": (".png", np.uint8, 3),
    "png16-gray": (".png", np.uint16, 1),
    "jpeg-rgb": (".jpg", np.uint8, 3),
    "tiff16-gray": (".tif", np.uint16, 1),
}
CLASSES = ("cleavage", "morula", "blastocyst")


def write_image(path: Path, kind: str, seed: int, size: int = 24) -> np.ndarray:
    """Write one image of the given kind; returns the pixel array written."""
    suffix, dtype, channels = IMAGE_KINDS[kind]
    rng = np.random.default_rng(seed)
    high = np.iinfo(dtype).max
    shape = (size, size + 8) if channels == 1 else (size, size + 8, channels)
    array = rng.integers(0, high, size=shape, dtype=np.int64).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".tif":
        tifffile.imwrite(path, array)
    elif suffix == ".jpg":
        Image.fromarray(array).save(path, quality=95)
    else:
        Image.fromarray(array).save(path)
    return array


def write_table(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_image_table(root: Path, kind: str = "png8-gray", n: int = 24, groups: int = 8) -> Path:
    """`root/labels.csv` (image_path,stage,embryo_id,score,a,b) over n images of one kind."""
    rows = []
    for i in range(n):
        suffix = IMAGE_KINDS[kind][0]
        name = f"images/img_{i:03d}{suffix}"
        write_image(root / name, kind, seed=i)
        rows.append(
            [name, CLASSES[i % 3], f"E{i % groups:02d}", round(0.5 * i, 2), i % 2, (i // 2) % 2]
        )
    return write_table(
        root / "labels.csv", ["image_path", "stage", "embryo_id", "score", "a", "b"], rows
    )


def ingest(table: Path, out: Path, **options) -> object:
    """Ingest in-process (one threaded Dask worker) with the given options."""
    defaults = dict(image_col="image_path", workers=1, processes=False, quiet=True)
    return ingest_images(ImageIngestOptions(table=table, out=out, **{**defaults, **options}))


@pytest.fixture
def image_table(tmp_path: Path) -> Path:
    return make_image_table(tmp_path / "raw")
