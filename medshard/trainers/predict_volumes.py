"""Segmentation at inference: MONAI's sliding-window inference over a whole volume, and
the label map written as NIfTI in the space of its source file: the inverse of ingest's
reorientation to RAS+, with the source's affine, so that it overlays the input in any
viewer. A label map replaces only a label map that predict wrote (its NIfTI description
says so), never a file of the user's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medshard.errors import MedshardError

__all__ = [
    "LabelMapError",
    "label_map_paths",
    "segment_record",
    "segment_volume",
    "to_source_space",
    "write_label_map",
]

MARK = b"medshard predict label map"  # the NIfTI header's descrip of every map written


class LabelMapError(MedshardError, ValueError):
    """An --output-dir where the label maps cannot go without replacing another file."""


def _stem(name: str) -> str:
    stem = Path(name.split(",")[0]).name
    for suffix in (".nii.gz", ".nii"):
        stem = stem.removesuffix(suffix)
    return stem


def _ours(path: Path) -> bool:
    """Whether `path` is a label map that predict wrote."""
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
    except Exception:  # noqa: BLE001 - any file nibabel cannot read is not ours
        return False
    descrip = header.get("descrip")
    return descrip is not None and np.asarray(descrip).item() == MARK


def label_map_paths(out: Path, names: list[str]) -> list[Path]:
    """Where each input's label map goes (`out/STEM_seg.nii.gz`), refused before any is
    written when two inputs would share one, or one would replace a file that is not a
    label map of predict's (a mask beside its image, for one)."""
    from medshard.trainers.predict_records import outside_datasets

    out = Path(out)
    outside_datasets(out, "--output-dir")
    if out.exists() and not out.is_dir():
        raise LabelMapError(f"{out}: --output-dir is a file, not a folder")
    paths, taken = [], {}
    for name in names:
        path = out / f"{_stem(name)}_seg.nii.gz"
        if path in taken:
            raise LabelMapError(
                f"{name}: its label map {path} would replace that of {taken[path]}; predict "
                "inputs of one name in separate runs or --output-dir folders"
            )
        if path.exists() and (path.is_dir() or not _ours(path)):
            raise LabelMapError(
                f"{path}: exists and is not a label map written by medshard predict; it is "
                "never replaced: give another --output-dir"
            )
        taken[path] = name
        paths.append(path)
    return paths


def segment_volume(
    model, image: torch.Tensor, roi: tuple[int, int, int], batch_size: int, device
) -> torch.Tensor:
    """Logits (K, z, y, x) of a normalised (C, z, y, x) volume, patch by patch of `roi`,
    `batch_size` patches at a time, overlapping by a quarter and blended with a Gaussian
    (edges pad themselves where the volume is smaller than a patch)."""
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(
            image[None].to(device),
            roi_size=roi,
            sw_batch_size=batch_size,
            predictor=model,
            overlap=0.25,
            mode="gaussian",
        )
    return logits[0]


def to_source_space(labels_zyx: np.ndarray, affine) -> np.ndarray:
    """A label map stored as ingest stores volumes ((z, y, x) of the closest canonical
    orientation) in the array order of the source file whose affine is `affine`."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    canonical = np.asarray(labels_zyx).transpose(2, 1, 0)  # (x, y, z) in RAS+
    back = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(np.asarray(affine)))
    return np.ascontiguousarray(apply_orientation(canonical, back))


def write_label_map(labels_zyx: np.ndarray, affine, spacing, path: Path) -> tuple[Path, list[int]]:
    """Write the label map as NIfTI at `path`: in the source file's space when its
    `affine` is known, else on the stored (x, y, z) grid with its `spacing` (z, y, x).
    Returns the path and the written array's shape."""
    import nibabel as nib

    dtype = np.uint8 if int(labels_zyx.max(initial=0)) < 256 else np.int16
    if affine is not None:
        data, matrix = to_source_space(labels_zyx, affine), np.asarray(affine, np.float64)
    else:
        data = np.ascontiguousarray(np.asarray(labels_zyx).transpose(2, 1, 0))
        matrix = np.diag([*(list(spacing or (1.0, 1.0, 1.0))[::-1]), 1.0])
    image = nib.Nifti1Image(data.astype(dtype), matrix)
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = MARK
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.nii.gz")
    nib.save(image, str(partial))
    partial.replace(path)
    return path, list(data.shape)


def segment_record(
    model,
    name: str,
    sample: dict,
    image: torch.Tensor,
    roi: tuple[int, int, int],
    classes: int,
    batch_size: int,
    device,
    out: Path,
) -> tuple[dict, torch.Tensor]:
    """One volume's prediction record, its label map written as NIfTI at `out` (one of
    label_map_paths); and its logits."""
    logits = segment_volume(model, image, roi, batch_size, device)
    labels = logits.argmax(0).to(torch.int64).cpu().numpy()
    path, shape = write_label_map(labels, sample.get("space"), sample.get("spacing"), out)
    counts = np.bincount(labels.ravel(), minlength=classes)
    record = {
        "input": name,
        "output": str(path),
        "shape": shape,
        "voxels": {str(k): int(n) for k, n in enumerate(counts)},
    }
    return record, logits
