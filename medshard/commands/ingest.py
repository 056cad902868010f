"""`medshard ingest images|tiff|nifti|video`. Every flag is the option field of the same
name (medshard/ingest/*Options), so each command hands its flags over whole."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medshard.commands.common import (
    Classes,
    Crops,
    EndpointUrl,
    Folds,
    GroupCol,
    OnError,
    Out,
    Overwrite,
    PatchSize,
    Root,
    Scheduler,
    ShardSize,
    Spacing,
    SplitCol,
    Workers,
    run_ingest,
)

AllowOutsideRoot = Annotated[
    bool, typer.Option(help="Also ingest table paths that lead outside --root.")
]

Codec = Annotated[
    str,
    typer.Option(help="Zarr chunks: none (fastest to read), lz4 (smaller) or zstd (archives)."),
]
Intensity = Annotated[
    str,
    typer.Option(help="Float images stored as source, float16, or int16 with a scale."),
]

ingest_app = typer.Typer(help="Convert raw data into a medshard dataset.", no_args_is_help=True)
Opt = typer.Option


@ingest_app.command("images")
def ingest_images_command(
    table: Annotated[Path, typer.Argument(help="CSV with one row per image.")],
    out: Out,
    image_col: Annotated[str, Opt(help="Column with the image path.")],
    root: Root = None,
    allow_outside_root: AllowOutsideRoot = False,
    label_col: Annotated[str | None, Opt(help="One class per image.")] = None,
    label_cols: Annotated[
        str | None, Opt(help="Comma-separated 0/1 columns (multi-label).")
    ] = None,
    target_col: Annotated[str | None, Opt(help="A number per image (regression).")] = None,
    classes: Classes = None,
    key_col: Annotated[str | None, Opt(help="Sample keys (default: from the image path).")] = None,
    group_col: GroupCol = None,
    split_col: SplitCol = None,
    max_pixels: Annotated[int, Opt(help="Refuse larger images (decompression bomb).")] = 89478485,
    train_size: Annotated[
        str | None, Opt(help="Also store a training copy: longest side (256) or H,W.")
    ] = None,
    train_format: Annotated[str, Opt(help="Training copy as raw (.npy), jpeg or png.")] = "raw",
    train_quality: Annotated[int, Opt(help="JPEG quality of training copies.")] = 90,
    samples_per_shard: int = 10_000,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    folds: Folds = 0,
    seed: int = 0,
    shard_size: ShardSize = "256MB",
    on_error: OnError = "fail",
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Ingest 2D images (PNG, JPEG, TIFF) listed in a CSV into WebDataset shards."""
    flags = dict(locals())
    from medshard.ingest.images import ImageIngestOptions, ingest_images

    run_ingest(ImageIngestOptions, ingest_images, flags)


@ingest_app.command("tiff")
def ingest_tiff_command(
    root: Annotated[
        Path,
        typer.Argument(help="Folder of samples: ID/raw/*.tif [ID/mask/*.tif], or *.tif stacks."),
    ],
    out: Out,
    labels: Annotated[Path | None, Opt(help="CSV mapping sample id -> class.")] = None,
    id_col: Annotated[str | None, Opt(help="Sample id column (default: the first).")] = None,
    label_col: Annotated[str | None, Opt(help="Class column (default: the second).")] = None,
    classes: Classes = None,
    patch_size: PatchSize = "64,64,64",
    crops: Crops = None,
    spacing: Spacing = None,
    codec: Codec = "none",
    intensity: Intensity = "source",
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    folds: Folds = 0,
    seed: int = 0,
    shard_size: ShardSize = "256MB",
    on_error: OnError = "fail",
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Ingest TIFF stacks (one TIFF per z-slice, or multi-page) into Zarr v3."""
    flags = dict(locals())
    from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff

    run_ingest(TiffIngestOptions, ingest_tiff, flags)


@ingest_app.command("nifti")
def ingest_nifti_command(
    table: Annotated[Path, typer.Argument(help="CSV with one row per subject.")],
    out: Out,
    modalities: Annotated[str, Opt(help="Comma-separated columns holding each modality's file.")],
    root: Root = None,
    allow_outside_root: AllowOutsideRoot = False,
    mask_col: Annotated[str | None, Opt(help="Column with the segmentation mask file.")] = None,
    label_col: Annotated[str | None, Opt(help="One class per subject.")] = None,
    target_col: Annotated[str | None, Opt(help="A number per subject (e.g. age).")] = None,
    classes: Classes = None,
    key_col: Annotated[
        str | None, Opt(help="Sample keys (default: from the first modality's path).")
    ] = None,
    group_col: GroupCol = None,
    split_col: SplitCol = None,
    resample: Annotated[
        bool, Opt(help="Resample modalities onto the first one's grid (nibabel).")
    ] = False,
    patch_size: PatchSize = "64,64,64",
    crops: Crops = None,
    spacing: Spacing = None,
    codec: Codec = "none",
    intensity: Intensity = "source",
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    folds: Folds = 0,
    seed: int = 0,
    shard_size: ShardSize = "256MB",
    on_error: OnError = "fail",
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Ingest multi-modal NIfTI (.nii, .nii.gz, .npy) subjects into Zarr v3, RAS+ oriented."""
    flags = dict(locals())
    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti

    run_ingest(NiftiIngestOptions, ingest_nifti, flags)


@ingest_app.command("video")
def ingest_video_command(
    table: Annotated[
        Path, typer.Argument(help="Index CSV with one row per video or frame folder.")
    ],
    out: Out,
    video_col: Annotated[str, Opt(help="Column with the video file or frame folder.")],
    root: Root = None,
    allow_outside_root: AllowOutsideRoot = False,
    label_col: Annotated[str | None, Opt(help="One class per sequence.")] = None,
    label_cols: Annotated[str | None, Opt(help="Comma-separated 0/1 columns.")] = None,
    target_col: Annotated[str | None, Opt(help="A number per sequence.")] = None,
    classes: Classes = None,
    key_col: Annotated[str | None, Opt(help="Sample keys (default: from the path).")] = None,
    group_col: GroupCol = None,
    split_col: SplitCol = None,
    channels: Annotated[int, Opt(help="1 (grayscale) or 3 (RGB).")] = 1,
    size: Annotated[str, Opt(help="Frame size H,W.")] = "128,128",
    fit: Annotated[str, Opt(help="pad, crop or stretch to the frame size.")] = "pad",
    clip_len: Annotated[int | None, Opt(help="Also write clips of T frames to shards.")] = None,
    clip_stride: Annotated[
        int | None, Opt(help="Frames between clip starts (default: clip length).")
    ] = None,
    codec: Codec = "none",
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    folds: Folds = 0,
    seed: int = 0,
    shard_size: ShardSize = "256MB",
    on_error: OnError = "fail",
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Ingest time-lapse videos (mp4, avi, mov) or frame folders into Zarr and clip shards."""
    flags = dict(locals())
    from medshard.ingest.video import VideoIngestOptions, ingest_video

    run_ingest(VideoIngestOptions, ingest_video, flags)
