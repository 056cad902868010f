"""`medshard ingest nifti`: a table with one row per subject naming its modality files
(`.nii`, `.nii.gz` or `.npy`) and optional mask, into Zarr v3 in canonical RAS+
orientation with spacing, affines and axis codes kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medshard.errors import BadInputError
from medshard.ingest.options import TableIngestOptions, VolumeIngestOptions
from medshard.ingest.pipeline import Job, LoadedVolume, Recipe, run_ingest
from medshard.ingest.result import IngestResult
from medshard.ingest.table import (
    LabelSpec,
    check_rows,
    read_table,
    require_columns,
    row_file,
    row_key,
)
from medshard.ingest.volume_read import read_nifti_volume, same_grid, spacing_from_affine
from medshard.ingest.windows import WindowSpec

__all__ = ["NiftiIngestOptions", "ingest_nifti", "load_nifti_subject"]


class NiftiIngestOptions(VolumeIngestOptions, TableIngestOptions):
    modalities: tuple[str, ...]  # table columns holding each modality's path
    mask_col: str | None = None
    label_col: str | None = None
    target_col: str | None = None
    classes: tuple[str, ...] = ()
    resample: bool = False


def _read(path: str, is_mask: bool):
    try:
        return read_nifti_volume(Path(path), is_mask=is_mask)
    except ValueError as exc:
        raise BadInputError(path, str(exc)) from exc


def _resample(data: np.ndarray, affine: np.ndarray, shape, target_affine) -> np.ndarray:
    """Linear resampling onto another grid with nibabel.processing (scipy underneath)."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    moved = resample_from_to(
        nib.Nifti1Image(data.astype(np.float32), affine), (shape, target_affine), order=1
    )
    return np.asarray(moved.dataobj, dtype=np.float32)


def load_nifti_subject(
    paths: tuple[str, ...], names: tuple[str, ...], mask: str | None, resample: bool
) -> LoadedVolume:
    """Read every modality and the mask of one subject onto the first modality's grid."""
    channels = []
    reference = None
    for name, path in zip(names, paths):
        data, affine, original = _read(path, is_mask=False)
        if reference is None:
            reference = (data.shape, affine, original)
        elif not same_grid(affine, reference[1], data.shape, reference[0]):
            if not resample:
                raise BadInputError(
                    path,
                    (
                        f"modality {name!r} has shape {data.shape} and an affine unlike "
                        f"{names[0]!r} (shape {reference[0]}); pass --resample to resample "
                        f"it onto {names[0]!r}"
                    ),
                )
            data = _resample(data, affine, reference[0], reference[1])
        channels.append(data)
    shape, affine, original = reference
    dtype = np.result_type(*channels)
    image = np.stack([c.astype(dtype, copy=False).transpose(2, 1, 0) for c in channels])
    mask_zyx = None
    sources = [(p, [Path(p)]) for p in paths]
    if mask is not None:
        mask_data, mask_affine, _ = _read(mask, is_mask=True)
        if mask_data.shape != shape:
            raise BadInputError(
                mask, f"mask shape {mask_data.shape} differs from image shape {shape}"
            )
        if not same_grid(mask_affine, affine, mask_data.shape, shape):
            raise BadInputError(mask, "mask affine differs from the image's affine")
        mask_zyx = np.ascontiguousarray(mask_data.transpose(2, 1, 0))
        sources.append((mask, [Path(mask)]))
    return LoadedVolume(
        image=np.ascontiguousarray(image),
        mask=mask_zyx,
        spacing=spacing_from_affine(affine),
        unit="millimeter",
        sources=sources,
        attributes={
            "affine": np.asarray(affine).tolist(),
            "original_affine": np.asarray(original).tolist(),
            "axis_codes": ["R", "A", "S"],
            # The affine maps voxel (i, j, k) = array axes (x, y, z); the array is (c, z, y, x).
            "array_axes": ["channel", "S", "A", "R"],
            "channel_names": list(names),
            "resampled_with": "nibabel.processing.resample_from_to (order 1)" if resample else None,
        },
    )


def ingest_nifti(options: NiftiIngestOptions, command: str = "") -> IngestResult:
    """Ingest a subject table of NIfTI volumes into a volume dataset at `options.out`."""
    o = options
    if not o.modalities:
        raise BadInputError(str(o.table), "name at least one modality column (--modalities)")
    spec = LabelSpec(label_col=o.label_col, target_col=o.target_col, classes=tuple(o.classes))
    rows = read_table(o.table)
    optional = [c for c in (o.mask_col, o.key_col, o.group_col, o.split_col) if c]
    require_columns(o.table, rows, [*o.modalities, *spec.columns, *optional])
    spec = spec.with_classes_from(rows)
    root = o.data_root
    columns = [*o.modalities, *([o.mask_col] if o.mask_col else [])]

    def check(i: int, row: dict, where: str) -> Job:
        paths = [
            str(row_file(root, row, column, where, o.allow_outside_root)) for column in columns
        ]
        key = row_key(row, o.key_col, row[o.modalities[0]])
        parsed = spec.parse(row)
        mask = paths[len(o.modalities)] if o.mask_col else None
        return Job(
            row=i,
            key=key,
            source=where,
            group=o.group_of(row, key),
            split=o.split_of(row),
            parsed=parsed,
            files=tuple(paths),
            read=load_nifti_subject,
            args=(tuple(paths[: len(o.modalities)]), tuple(o.modalities), mask, o.resample),
        )

    jobs, rejected = check_rows(o.table, rows, check)
    recipe = Recipe(
        spec=spec,
        kind="volumes",
        identity=o.identity(),
        tables=(o.table,),
        sources=o.sources,
        command=command,
        channel_names=o.modalities,
        window=WindowSpec("crop", tuple(o.crops)) if o.crops else None,
        layout=o.layout(),
        spacing=o.spacing,
    )
    return run_ingest(jobs, rejected, recipe, o)
