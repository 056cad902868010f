"""`medshard inspect`, `verify` and `bench`: looking at a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medshard.commands.common import (
    console,
    errors,
    fail,
    parse_triple,
)
from medshard.errors import MedshardError


def inspect(dataset: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Show a dataset's card: counts per split and label, shards, bytes, fields, shapes."""
    from medshard.commands.report import inspect_table
    from medshard.shards.reader import open_dataset

    try:
        ds = open_dataset(dataset)
        tables = inspect_table(ds)
    except MedshardError as exc:
        fail(exc)
    for table in tables:
        console.print(table)


def verify(dataset: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Check files against the card's checksums, shards against the manifest and indexes."""
    from rich.filesize import decimal

    from medshard.shards.verify import verify_dataset

    try:
        report = verify_dataset(dataset)
    except MedshardError as exc:
        fail(exc)
    if not report.ok:
        for problem in report.problems:
            errors.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(
        f"{dataset}: OK, {report.samples} samples in {report.shards} shards "
        f"({decimal(report.bytes)}) match the card's checksums, the manifest and indexes"
    )


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

    from medshard.bench import bench_dataset

    try:
        engine, baseline = bench_dataset(
            dataset,
            split=split,
            batch_size=batch_size,
            workers=workers,
            repetitions=repetitions,
            patch_size=parse_triple(patch_size),
            clip_len=clip_len,
            max_batches=max_batches,
        )
    except MedshardError as exc:
        fail(exc)
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
