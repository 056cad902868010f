"""Tiny volumes in every raw layout the volume ingests accept, from fixed seeds."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

from tests.conftest import write_table

SHAPE = (12, 20, 24)  # z, y, x


def volume(seed: int, shape=SHAPE, dtype=np.uint16) -> tuple[np.ndarray, np.ndarray]:
    """An image and a mask that is a function of it (bright voxels are label 1 or 2)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 1000, shape).astype(dtype)
    mask = ((image > 800).astype(np.uint8) + (image > 950)).astype(np.uint8)
    return image, mask


def write_slices(folder: Path, stack: np.ndarray, **metadata) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for z, plane in enumerate(stack):
        tifffile.imwrite(folder / f"slice_{z}.tif", plane, **metadata)


def tiff_root(root: Path, n: int = 4, classes=("a", "b")) -> tuple[Path, dict]:
    """`root/s{i}/raw/slice_{z}.tif` (+ mask) with ImageJ spacing, and `root/classes.csv`.
    Slices are named slice_0 .. slice_11 so that only natural sorting orders them."""
    arrays = {}
    for i in range(n):
        image, mask = volume(i)
        write_slices(
            root / f"s{i}" / "raw",
            image,
            imagej=True,
            resolution=(4.0, 4.0),
            metadata={"spacing": 2.0, "unit": "um"},
        )
        write_slices(root / f"s{i}" / "mask", mask)
        arrays[f"s{i}"] = (image, mask)
    write_table(
        root / "classes.csv", ["sample_id", "class"], [[f"s{i}", classes[i % 2]] for i in range(n)]
    )
    return root, arrays


AFFINES = {
    "canonical": np.diag([1.0, 1.5, 2.0, 1.0]),
    # stored as (y, x, z) with both in-plane axes flipped, like many scanners' LPS exports
    "swapped-flipped": np.array(
        [[0, -1.5, 0, 30], [-1.0, 0, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]]
    ),
}


def nifti_subjects(root: Path, n: int = 4, affine: str = "canonical", scaled: bool = False) -> Path:
    """`root/sub{i}_{t1,t2,seg}.nii.gz` on one grid and `root/subjects.csv`."""
    rows = []
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = volume(i, shape=(10, 14, 8), dtype=np.int16)
        t2 = image[::-1].copy()
        t1_img = nib.Nifti1Image(image, AFFINES[affine])
        if scaled:
            t1_img.header.set_slope_inter(0.25, 10.0)
        nib.save(t1_img, root / f"sub{i}_t1.nii.gz")
        nib.save(nib.Nifti1Image(t2, AFFINES[affine]), root / f"sub{i}_t2.nii.gz")
        nib.save(nib.Nifti1Image(mask, AFFINES[affine]), root / f"sub{i}_seg.nii.gz")
        rows.append(
            [
                f"sub{i}",
                f"sub{i}_t1.nii.gz",
                f"sub{i}_t2.nii.gz",
                f"sub{i}_seg.nii.gz",
                ("young", "old")[i % 2],
                30 + 10 * i,
            ]
        )
    return write_table(root / "subjects.csv", ["subject", "t1", "t2", "seg", "group", "age"], rows)
