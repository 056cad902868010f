"""`medshard ingest images|tiff|nifti|video`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medshard.commands.common import (
    Crops,
    PatchSize,
    Spacing,
    command_line,
    fail,
    parse_columns,
    parse_size,
    report_ingest,
    volume_flags,
)
from medshard.errors import MedshardError

ingest_app = typer.Typer(help="Convert raw data into a medshard dataset.", no_args_is_help=True)


@ingest_app.command("images")
def ingest_images_command(
    table: Annotated[Path, typer.Argument(help="CSV with one row per image.")],
    out: Annotated[Path, typer.Option(help="Dataset directory to create.")],
    image_col: Annotated[str, typer.Option(help="Column with the image path.")],
    root: Annotated[
        Path | None,
        typer.Option(help="Image paths are relative to this (default: the table's folder)."),
    ] = None,
    label_col: Annotated[str | None, typer.Option(help="One class per image.")] = None,
    label_cols: Annotated[
        str | None, typer.Option(help="Comma-separated 0/1 columns (multi-label).")
    ] = None,
    target_col: Annotated[str | None, typer.Option(help="A number per image (regression).")] = None,
    classes: Annotated[
        str | None, typer.Option(help="Comma-separated known classes, in index order.")
    ] = None,
    key_col: Annotated[
        str | None, typer.Option(help="Sample keys (default: from the image path).")
    ] = None,
    group_col: Annotated[
        str | None, typer.Option(help="Patient/embryo id: a group is never split.")
    ] = None,
    split_col: Annotated[str | None, typer.Option(help="Keep this existing split column.")] = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    folds: Annotated[
        int, typer.Option(help="Cross-validation folds over the non-test samples.")
    ] = 0,
    seed: int = 0,
    shard_size: Annotated[str, typer.Option(help="Largest shard, e.g. 256MB.")] = "256MB",
    samples_per_shard: int = 10_000,
    on_error: Annotated[
        str, typer.Option(help="fail: stop at the first bad input; skip: record it and go on.")
    ] = "fail",
    workers: Annotated[
        int | None, typer.Option(help="Local Dask worker processes (default: all cores).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of an existing dask.distributed scheduler.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a different dataset at --out.")] = False,
) -> None:
    """Ingest 2D images (PNG, JPEG, TIFF) listed in a CSV into WebDataset shards."""
    from pydantic import ValidationError

    from medshard.ingest.images import ImageIngestOptions, ingest_images

    if on_error not in ("fail", "skip"):
        raise typer.BadParameter("--on-error takes fail or skip")
    try:
        options = ImageIngestOptions(
            table=table,
            out=out,
            image_col=image_col,
            root=root,
            label_col=label_col,
            label_cols=parse_columns(label_cols),
            target_col=target_col,
            classes=parse_columns(classes),
            key_col=key_col,
            group_col=group_col,
            split_col=split_col,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            folds=folds,
            seed=seed,
            shard_bytes=parse_size(shard_size),
            shard_samples=samples_per_shard,
            on_error=on_error,
            workers=workers,
            scheduler=scheduler,
            overwrite=overwrite,
        )
        result = ingest_images(options, command=command_line())
    except (MedshardError, ValidationError, ValueError) as exc:
        fail(exc)
    report_ingest(result, out)


@ingest_app.command("tiff")
def ingest_tiff_command(
    root: Annotated[
        Path,
        typer.Argument(help="Folder of samples: ID/raw/*.tif [ID/mask/*.tif], or *.tif stacks."),
    ],
    out: Annotated[Path, typer.Option(help="Dataset directory to create.")],
    labels: Annotated[Path | None, typer.Option(help="CSV mapping sample id -> class.")] = None,
    id_col: Annotated[
        str | None, typer.Option(help="Sample id column (default: the first).")
    ] = None,
    label_col: Annotated[
        str | None, typer.Option(help="Class column (default: the second).")
    ] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated known classes.")] = None,
    patch_size: PatchSize = "64,64,64",
    crops: Crops = None,
    spacing: Spacing = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    folds: int = 0,
    seed: int = 0,
    shard_size: str = "256MB",
    on_error: str = "fail",
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
) -> None:
    """Ingest TIFF stacks (one TIFF per z-slice, or multi-page) into Zarr v3."""
    from pydantic import ValidationError

    from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff

    try:
        options = TiffIngestOptions(
            root=root,
            labels=labels,
            id_col=id_col,
            label_col=label_col,
            classes=parse_columns(classes),
            **volume_flags(
                out,
                patch_size,
                crops,
                spacing,
                val_fraction,
                test_fraction,
                folds,
                seed,
                shard_size,
                on_error,
                workers,
                scheduler,
                overwrite,
            ),
        )
        result = ingest_tiff(options, command=command_line())
    except (MedshardError, ValidationError, ValueError) as exc:
        fail(exc)
    report_ingest(result, out)


@ingest_app.command("nifti")
def ingest_nifti_command(
    table: Annotated[Path, typer.Argument(help="CSV with one row per subject.")],
    out: Annotated[Path, typer.Option(help="Dataset directory to create.")],
    modalities: Annotated[
        str, typer.Option(help="Comma-separated columns holding each modality's file.")
    ],
    root: Annotated[
        Path | None,
        typer.Option(help="Paths are relative to this (default: the table's folder)."),
    ] = None,
    mask_col: Annotated[
        str | None, typer.Option(help="Column with the segmentation mask file.")
    ] = None,
    label_col: Annotated[str | None, typer.Option(help="One class per subject.")] = None,
    target_col: Annotated[str | None, typer.Option(help="A number per subject (e.g. age).")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated known classes.")] = None,
    key_col: Annotated[
        str | None, typer.Option(help="Sample keys (default: from the first modality's path).")
    ] = None,
    group_col: Annotated[
        str | None, typer.Option(help="Subject/patient id: a group is never split.")
    ] = None,
    split_col: Annotated[str | None, typer.Option(help="Keep this existing split column.")] = None,
    resample: Annotated[
        bool, typer.Option(help="Resample modalities onto the first one's grid (nibabel).")
    ] = False,
    patch_size: PatchSize = "64,64,64",
    crops: Crops = None,
    spacing: Spacing = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    folds: int = 0,
    seed: int = 0,
    shard_size: str = "256MB",
    on_error: str = "fail",
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
) -> None:
    """Ingest multi-modal NIfTI (.nii, .nii.gz, .npy) subjects into Zarr v3, RAS+ oriented."""
    from pydantic import ValidationError

    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti

    try:
        options = NiftiIngestOptions(
            table=table,
            root=root,
            modalities=parse_columns(modalities),
            mask_col=mask_col,
            label_col=label_col,
            target_col=target_col,
            classes=parse_columns(classes),
            key_col=key_col,
            group_col=group_col,
            split_col=split_col,
            resample=resample,
            **volume_flags(
                out,
                patch_size,
                crops,
                spacing,
                val_fraction,
                test_fraction,
                folds,
                seed,
                shard_size,
                on_error,
                workers,
                scheduler,
                overwrite,
            ),
        )
        result = ingest_nifti(options, command=command_line())
    except (MedshardError, ValidationError, ValueError) as exc:
        fail(exc)
    report_ingest(result, out)


@ingest_app.command("video")
def ingest_video_command(
    table: Annotated[
        Path, typer.Argument(help="Index CSV with one row per video or frame folder.")
    ],
    out: Annotated[Path, typer.Option(help="Dataset directory to create.")],
    video_col: Annotated[str, typer.Option(help="Column with the video file or frame folder.")],
    root: Annotated[
        Path | None, typer.Option(help="Paths are relative to this (default: the table's folder).")
    ] = None,
    label_col: Annotated[str | None, typer.Option(help="One class per sequence.")] = None,
    label_cols: Annotated[str | None, typer.Option(help="Comma-separated 0/1 columns.")] = None,
    target_col: Annotated[str | None, typer.Option(help="A number per sequence.")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated known classes.")] = None,
    key_col: Annotated[
        str | None, typer.Option(help="Sample keys (default: from the path).")
    ] = None,
    group_col: Annotated[
        str | None, typer.Option(help="Embryo/patient id: a group is never split.")
    ] = None,
    split_col: Annotated[str | None, typer.Option(help="Keep this existing split column.")] = None,
    channels: Annotated[int, typer.Option(help="1 (grayscale) or 3 (RGB).")] = 1,
    size: Annotated[str, typer.Option(help="Frame size H,W.")] = "128,128",
    fit: Annotated[str, typer.Option(help="pad, crop or stretch to the frame size.")] = "pad",
    clip_len: Annotated[
        int | None, typer.Option(help="Also write clips of T frames to shards.")
    ] = None,
    clip_stride: Annotated[
        int | None, typer.Option(help="Frames between clip starts (default: clip length).")
    ] = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    folds: int = 0,
    seed: int = 0,
    shard_size: str = "256MB",
    on_error: str = "fail",
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
) -> None:
    """Ingest time-lapse videos (mp4, avi, mov) or frame folders into Zarr and clip shards."""
    from pydantic import ValidationError

    from medshard.ingest.video import VideoIngestOptions, ingest_video

    try:
        height, width = (int(v) for v in size.split(","))
        options = VideoIngestOptions(
            table=table,
            root=root,
            video_col=video_col,
            label_col=label_col,
            label_cols=parse_columns(label_cols),
            target_col=target_col,
            classes=parse_columns(classes),
            key_col=key_col,
            group_col=group_col,
            split_col=split_col,
            channels=channels,
            size=(height, width),
            fit=fit,
            clip_len=clip_len,
            clip_stride=clip_stride,
            **volume_flags(
                out,
                "64,64,64",
                None,
                None,
                val_fraction,
                test_fraction,
                folds,
                seed,
                shard_size,
                on_error,
                workers,
                scheduler,
                overwrite,
            ),
        )
        result = ingest_video(options, command=command_line())
    except (MedshardError, ValidationError, ValueError) as exc:
        fail(exc)
    report_ingest(result, out)
