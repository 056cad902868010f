"""Synthetic 3D workloads: nuclei-3d (one TIFF per z-slice, masks, class CSV) and fomo-mri
(multi-modal NIfTI subjects with a segmentation, a class and an age)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["NUCLEI_CLASSES", "MRI_CLASSES", "synth_nuclei_3d", "synth_fomo_mri"]

NUCLEI_CLASSES = ("interphase", "mitotic", "apoptotic")
MRI_CLASSES = ("normal", "lesion")


def _ellipsoid(grid: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _nuclei_volume(rng: np.random.Generator, cls: str, shape: tuple[int, int, int]):
    grid = np.ogrid[: shape[0], : shape[1], : shape[2]]
    image = rng.normal(300, 40, shape)
    mask = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        centre = [rng.uniform(0.15 * s, 0.85 * s) for s in shape]
        base = min(shape[1:]) * rng.uniform(0.08, 0.14)
        if cls == "mitotic":  # condensed, elongated and bright
            radii, level = (base * 0.5, base * 0.5, base * 1.4), 2600
        elif cls == "apoptotic":  # small, fragmented-looking and very bright
            radii, level = (base * 0.45, base * 0.45, base * 0.45), 3200
        else:
            radii, level = (base * 0.8, base, base), 1500
        body = _ellipsoid(grid, centre, radii)
        image[body] += level * rng.uniform(0.8, 1.2)
        mask[body] = 1
    return np.clip(image, 0, 65535).astype(np.uint16), mask


def synth_nuclei_3d(
    out: str | Path, n: int = 12, seed: int = 0, shape: tuple[int, int, int] = (80, 160, 160)
) -> Path:
    """Write `out/0001/raw/z000.tif ...`, `out/0001/mask/z000.tif ...` (ImageJ TIFFs with
    0.5 x 0.2 x 0.2 micrometre spacing) and `out/classes.csv` (sample_id,class)."""
    import tifffile

    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        cls = NUCLEI_CLASSES[int(rng.integers(len(NUCLEI_CLASSES)))]
        image, mask = _nuclei_volume(rng, cls, shape)
        sample = f"{i:04d}"
        for folder, stack in (("raw", image), ("mask", mask)):
            (out / sample / folder).mkdir(parents=True, exist_ok=True)
            for z, plane in enumerate(stack):
                tifffile.imwrite(
                    out / sample / folder / f"z{z:03d}.tif",
                    plane,
                    imagej=True,
                    resolution=(5.0, 5.0),
                    metadata={"spacing": 0.5, "unit": "um"},
                )
        rows.append((sample, cls))
    with open(out / "classes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "class"])
        writer.writerows(rows)
    return out / "classes.csv"


def _brain(rng: np.random.Generator, shape, age: float, lesion: bool):
    """(x, y, z) arrays: FLAIR, DWI, ADC and a lesion mask; ventricles grow with age."""
    grid = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = [s / 2 for s in shape]
    brain = _ellipsoid(grid, centre, [s * 0.42 for s in shape])
    ventricle = _ellipsoid(grid, centre, [s * (0.05 + 0.12 * (age - 20) / 70) for s in shape])
    seg = np.zeros(shape, np.uint8)
    if lesion:
        spot = [rng.uniform(0.35 * s, 0.65 * s) for s in shape]
        seg[_ellipsoid(grid, spot, [s * rng.uniform(0.06, 0.1) for s in shape]) & brain] = 1
    noise = lambda: rng.normal(0, 8, shape)  # noqa: E731
    flair = brain * 400.0 - ventricle * 300.0 + seg * 350.0 + noise()
    dwi = brain * 300.0 + seg * 500.0 + noise()
    adc = brain * 800.0 + ventricle * 1500.0 - seg * 400.0 + noise()
    return [np.clip(v, 0, None) for v in (flair, dwi, adc)], seg


def synth_fomo_mri(
    out: str | Path, n: int = 12, seed: int = 0, shape: tuple[int, int, int] = (48, 56, 40)
) -> Path:
    """Write `out/sub-####/anat/sub-####_{flair,dwi,adc,seg}.nii.gz` and
    `out/participants.csv` (subject, flair, dwi, adc, seg, diagnosis, age). Every third
    subject has a non-canonical (LPS-like, axis-swapped) affine; FLAIR is int16 with a
    scl_slope; the last subject ships all its volumes as `.npy` (RAS+ arrays, no affine)."""
    import nibabel as nib

    out = Path(out)
    rng = np.random.default_rng(seed)
    spacing = (1.0, 1.2, 1.5)
    canonical = np.diag([*spacing, 1.0])
    canonical[:3, 3] = [-s * d / 2 for s, d in zip(spacing, shape)]
    rows = []
    for i in range(1, n + 1):
        subject = f"sub-{i:04d}"
        age = float(np.round(rng.uniform(20, 90), 1))
        diagnosis = MRI_CLASSES[int(rng.random() < 0.5)]
        volumes, seg = _brain(rng, shape, age, diagnosis == "lesion")
        affine = canonical
        as_npy = i == n
        if (
            i % 3 == 0 and not as_npy
        ):  # stored as (y, x, z) with x and y flipped: as_closest_canonical undoes it
            volumes = [np.ascontiguousarray(v.transpose(1, 0, 2)[::-1, ::-1]) for v in volumes]
            seg = np.ascontiguousarray(seg.transpose(1, 0, 2)[::-1, ::-1])
            flip = np.array([[0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
            flip[0, 3], flip[1, 3] = shape[1] - 1, shape[0] - 1
            affine = canonical @ flip
        folder = out / subject / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        names = {}
        for modality, volume in zip(("flair", "dwi", "adc", "seg"), (*volumes, seg)):
            stem = f"{subject}/anat/{subject}_{modality}"
            if as_npy:
                names[modality] = f"{stem}.npy"
                np.save(
                    out / names[modality],
                    volume if modality == "seg" else volume.astype(np.float32),
                )
                continue
            names[modality] = f"{stem}.nii.gz"
            if modality == "flair":
                image = nib.Nifti1Image(np.round(volume / 0.5).astype(np.int16), affine)
                image.header.set_slope_inter(0.5, 0.0)
            else:
                image = nib.Nifti1Image(
                    volume if modality == "seg" else volume.astype(np.float32), affine
                )
            nib.save(image, out / names[modality])
        rows.append(
            (subject, names["flair"], names["dwi"], names["adc"], names["seg"], diagnosis, age)
        )
    with open(out / "participants.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "flair", "dwi", "adc", "seg", "diagnosis", "age"])
        writer.writerows(rows)
    return out / "participants.csv"
