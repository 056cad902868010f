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
    from medshard.report import ingest_table

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
    if result.up_to_date:
        console.print(
            f"{out}: already ingested with these inputs and options; nothing to do "
            "(--overwrite rebuilds it)"
        )
        return
    console.print(ingest_table(result))


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


@app.command()
def demo(out: Annotated[Path | None, typer.Option(help="Keep everything here.")] = None) -> None:
    """Synthesise the workloads' raw data, ingest, inspect and verify it."""
    from medshard.demo import run_demo

    try:
        run_demo(out, console)
    except MedshardError as exc:
        _fail(exc)
