"""The `medshard` command line: ingest, inspect, verify, synth, demo."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medshard.errors import MedshardError

app = typer.Typer(
    help="Streaming shards and GPU loaders for biomedical imaging.", no_args_is_help=True
)
ingest_app = typer.Typer(help="Convert raw data into a medshard dataset.", no_args_is_help=True)
synth_app = typer.Typer(
    help="Write small synthetic raw datasets in real layouts.", no_args_is_help=True
)
app.add_typer(ingest_app, name="ingest")
app.add_typer(synth_app, name="synth")

console = Console()
errors = Console(stderr=True)


def _fail(exc: Exception) -> None:
    errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def _size(text: str) -> int:
    """'256MB' -> 256000000; plain digits are bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*", text, re.IGNORECASE)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a size such as 256MB")
    unit = match.group(2).upper().rstrip("B")
    scale = {
        "": 1,
        "K": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "KI": 2**10,
        "MI": 2**20,
        "GI": 2**30,
        "TI": 2**40,
    }[unit]
    return int(float(match.group(1)) * scale)


def _columns(text: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip()) if text else ()


def _command_line() -> str:
    return shlex.join(["medshard", *sys.argv[1:]])


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
            label_cols=_columns(label_cols),
            target_col=target_col,
            classes=_columns(classes),
            key_col=key_col,
            group_col=group_col,
            split_col=split_col,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            folds=folds,
            seed=seed,
            shard_bytes=_size(shard_size),
            shard_samples=samples_per_shard,
            on_error=on_error,
            workers=workers,
            scheduler=scheduler,
            overwrite=overwrite,
        )
        result = ingest_images(options, command=_command_line())
    except (MedshardError, ValidationError, ValueError) as exc:
        _fail(exc)
    _report(result, out)


def _triple(text: str | None, kind=int) -> tuple | None:
    if not text:
        return None
    values = tuple(kind(v) for v in text.split(","))
    if len(values) != 3:
        raise typer.BadParameter(f"{text!r}: give three comma-separated values, e.g. 64,64,64")
    return values


def _volume_flags(
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
) -> dict:
    if on_error not in ("fail", "skip"):
        raise typer.BadParameter("--on-error takes fail or skip")
    return dict(
        out=out,
        patch_size=_triple(patch_size),
        crops=_triple(crops),
        spacing=_triple(spacing, float),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        folds=folds,
        seed=seed,
        shard_bytes=_size(shard_size),
        on_error=on_error,
        workers=workers,
        scheduler=scheduler,
        overwrite=overwrite,
    )


def _report(result, out: Path) -> None:
    from medshard.report import ingest_table

    if result.up_to_date:
        console.print(
            f"{out}: already ingested with these inputs and options; nothing to do "
            "(--overwrite rebuilds it)"
        )
    else:
        console.print(ingest_table(result))


PatchSize = Annotated[str, typer.Option(help="Training patch z,y,x: sets the Zarr chunks.")]
Crops = Annotated[
    str | None, typer.Option(help="Also write non-overlapping crops z,y,x to shards.")
]
Spacing = Annotated[str | None, typer.Option(help="Voxel spacing z,y,x (overrides metadata).")]


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
            classes=_columns(classes),
            **_volume_flags(
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
        result = ingest_tiff(options, command=_command_line())
    except (MedshardError, ValidationError, ValueError) as exc:
        _fail(exc)
    _report(result, out)


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
            modalities=_columns(modalities),
            mask_col=mask_col,
            label_col=label_col,
            target_col=target_col,
            classes=_columns(classes),
            key_col=key_col,
            group_col=group_col,
            split_col=split_col,
            resample=resample,
            **_volume_flags(
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
        result = ingest_nifti(options, command=_command_line())
    except (MedshardError, ValidationError, ValueError) as exc:
        _fail(exc)
    _report(result, out)


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
            label_cols=_columns(label_cols),
            target_col=target_col,
            classes=_columns(classes),
            key_col=key_col,
            group_col=group_col,
            split_col=split_col,
            channels=channels,
            size=(height, width),
            fit=fit,
            clip_len=clip_len,
            clip_stride=clip_stride,
            **_volume_flags(
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
        result = ingest_video(options, command=_command_line())
    except (MedshardError, ValidationError, ValueError) as exc:
        _fail(exc)
    _report(result, out)


@app.command()
def inspect(dataset: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Show a dataset's card: counts per split and label, shards, bytes, fields, shapes."""
    from medshard.report import inspect_table
    from medshard.shards.reader import open_dataset

    try:
        ds = open_dataset(dataset)
        tables = inspect_table(ds)
    except MedshardError as exc:
        _fail(exc)
    for table in tables:
        console.print(table)


@app.command()
def verify(dataset: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Re-read every shard against the manifest and indexes; exit 1 listing problems."""
    from medshard.report import human_bytes
    from medshard.shards.verify import verify_dataset

    try:
        report = verify_dataset(dataset)
    except MedshardError as exc:
        _fail(exc)
    if not report.ok:
        for problem in report.problems:
            errors.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(
        f"{dataset}: OK, {report.samples} samples in {report.shards} shards "
        f"({human_bytes(report.bytes)}) match the manifest and indexes"
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: Annotated[
        Path, typer.Argument(help="Training config (YAML), e.g. configs/embryo-stage.yaml.")
    ],
    folds: Annotated[int, typer.Option(help="Cross-validate over the dataset's K folds.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from outputs/RUN/last.")] = False,
) -> None:
    """Train from a config, with key=value overrides (epochs=5 loader.batch_size=8). Under
    `accelerate launch -m medshard.trainers` the same run spans processes and nodes."""
    from medshard.trainers.cli import run

    try:
        result = run(str(config), list(ctx.args), folds, resume)
    except MedshardError as exc:
        _fail(exc)
    shown = {k: v for k, v in result.items() if isinstance(v, (float, dict))}
    for name, value in shown.items():
        if isinstance(value, dict):
            low, high = value["ci95"]
            spread = f"+/- {value['std']:.4f} (95% CI {low:.4f} .. {high:.4f})"
            console.print(f"{name}: {value['mean']:.4f} {spread}")
        else:
            console.print(f"{name}: {value:.4f}")


@app.command()
def bench(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory.")],
    split: str = "train",
    batch_size: int = 32,
    workers: int = 2,
    repetitions: int = 3,
    patch_size: Annotated[str | None, typer.Option(help="Volumes: patch z,y,x from Zarr.")] = None,
    clip_len: Annotated[
        int | None, typer.Option(help="Video: clips of T frames from Zarr.")
    ] = None,
    max_batches: Annotated[int | None, typer.Option(help="Stop each run after this many.")] = None,
) -> None:
    """Measure the engine's loader on a dataset, and the lazy per-file loader over its raw
    sources when the manifest still reaches them (decode and batch, no augmentation)."""
    from rich.table import Table

    from benchmarks.user_dataset import bench_dataset

    try:
        engine, baseline = bench_dataset(
            dataset,
            split=split,
            batch_size=batch_size,
            workers=workers,
            repetitions=repetitions,
            patch_size=_triple(patch_size),
            clip_len=clip_len,
            max_batches=max_batches,
        )
    except MedshardError as exc:
        _fail(exc)
    table = Table(
        title=f"{dataset} ({split}, batch {batch_size}, {workers} workers)", title_justify="left"
    )
    for column in ("loader", "samples/s", "MB/s", "first batch s", "peak RSS MB"):
        table.add_column(column, justify="right")
    for m in (baseline, engine):
        if m is not None:
            table.add_row(
                m.name,
                f"{m.samples_per_s:.1f}",
                f"{m.mb_per_s:.1f}",
                f"{m.first_batch_s:.2f}",
                f"{m.peak_rss_mb:.0f}",
            )
    console.print(table)
    if baseline is None:
        console.print(
            "no baseline: the raw sources are not reachable from the manifest "
            "(or this kind of dataset has no lazy reader here)"
        )
    else:
        console.print(
            f"engine / lazy baseline: {engine.samples_per_s / baseline.samples_per_s:.1f}x"
        )


@synth_app.command("embryo-stage")
def synth_embryo(out: Path, n: int = 300, seed: int = 0) -> None:
    """Embryo images (JPEG) with labels.csv: image_path,stage,embryo_id."""
    from medshard.synth.images import synth_embryo_stage

    console.print(f"wrote {synth_embryo_stage(out, n=n, seed=seed)}")


@synth_app.command("mammo-tiles")
def synth_mammo(out: Path, n: int = 400, seed: int = 0) -> None:
    """16-bit PNG mammography tiles with labels.csv: tile_path,<0/1 per class>,patient_id."""
    from medshard.synth.images import synth_mammo_tiles

    console.print(f"wrote {synth_mammo_tiles(out, n=n, seed=seed)}")


@synth_app.command("nuclei-3d")
def synth_nuclei(
    out: Path,
    n: int = 12,
    seed: int = 0,
    shape: Annotated[str, typer.Option(help="Volume z,y,x.")] = "80,160,160",
) -> None:
    """Per-slice TIFF stacks with masks (ID/raw, ID/mask) and classes.csv."""
    from medshard.synth.volumes import synth_nuclei_3d

    console.print(f"wrote {synth_nuclei_3d(out, n=n, seed=seed, shape=_triple(shape))}")


@synth_app.command("fomo-mri")
def synth_mri(
    out: Path,
    n: int = 12,
    seed: int = 0,
    shape: Annotated[str, typer.Option(help="Volume x,y,z.")] = "48,56,40",
) -> None:
    """Multi-modal NIfTI subjects (FLAIR, DWI, ADC, seg) with participants.csv."""
    from medshard.synth.volumes import synth_fomo_mri

    console.print(f"wrote {synth_fomo_mri(out, n=n, seed=seed, shape=_triple(shape))}")


@synth_app.command("ivf-timelapse")
def synth_ivf(out: Path, n: int = 12, seed: int = 0, frames: int = 24) -> None:
    """Embryo time-lapse sequences: mp4 files and frame folders, with index.csv."""
    from medshard.synth.video import synth_ivf_timelapse

    console.print(f"wrote {synth_ivf_timelapse(out, n=n, seed=seed, frames=frames)}")


@app.command()
def demo(out: Annotated[Path | None, typer.Option(help="Keep everything here.")] = None) -> None:
    """Synthesise the workloads' raw data, ingest, inspect and verify it."""
    from medshard.demo import run_demo

    try:
        run_demo(out, console)
    except MedshardError as exc:
        _fail(exc)
