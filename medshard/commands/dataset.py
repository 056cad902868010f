"""`medshard inspect`, `verify` and `bench`: looking at a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medshard.commands.common import (
    CacheDir,
    CacheLimit,
    EndpointUrl,
    console,
    errors,
    fail,
    parse_columns,
    parse_pair,
    parse_triple,
)
from medshard.errors import MedshardError


def inspect(
    dataset: Annotated[str, typer.Argument(help="Dataset directory or s3:// URL.")],
    show: Annotated[
        int | None, typer.Option(help="Save a contact sheet of N samples drawn by --seed.")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Sheet: samples of this split (default: all; train with --loader)."),
    ] = None,
    keys: Annotated[
        str | None, typer.Option(help="Sheet: these samples (comma-separated keys).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Sheet: the PNG to save (default: sheet.png).")
    ] = None,
    loader: Annotated[
        bool,
        typer.Option(
            "--loader",
            help="Sheet: samples as the training loader yields them (augmented, normalised).",
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            help="With --loader: a training config, whose augment and loader sections are used."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Sheet: the seed that draws the samples (default: 0).")
    ] = None,
    endpoint_url: EndpointUrl = None,
    cache_dir: CacheDir = None,
    cache_limit: CacheLimit = None,
) -> None:
    """Show a dataset's card: counts per split and label, shards, bytes, fields, shapes; with
    --show, --keys or --loader, save a contact sheet of its samples instead."""
    from medshard.shards.reader import open_dataset

    wanted = parse_columns(keys)
    storage = dict(cache_dir=cache_dir, cache_limit=cache_limit, endpoint_url=endpoint_url)
    if show is None and not wanted and not loader:
        if any(v is not None for v in (split, out, seed, config)):
            fail(
                MedshardError(
                    "--split, --out, --seed and --config choose what a sheet shows: "
                    "add --show N, --keys or --loader"
                )
            )
        _print_card(dataset, storage)
        return
    if config is not None and not loader:
        fail(MedshardError("--config gives the loader's settings: add --loader"))
    from medshard.sheets import render_sheet

    try:
        ds = open_dataset(dataset, **storage)
        sheet_options = {}
        if config is not None:
            from medshard.trainers.config import load_config

            train = load_config(config)
            split = split or train.loader.train_split
            sheet_options = dict(
                augment=train.augment,
                loader_options=train.loader.model_dump(include=_SHEET_LOADER_OPTIONS),
            )
        sheet = render_sheet(
            ds,
            out or Path("sheet.png"),
            show=show if show is not None else len(wanted) or 8,
            split=split,
            keys=wanted,
            seed=seed or 0,
            loader=loader,
            **sheet_options,
        )
    except MedshardError as exc:
        fail(exc)
    console.print(
        f"{sheet.path}: {len(sheet.keys)} samples, {sheet.width}x{sheet.height} px: "
        + ", ".join(sheet.keys),
        highlight=False,
        soft_wrap=True,
    )


# the options of a config's `loader:` section that choose what a sample is
_SHEET_LOADER_OPTIONS = {
    "patch_size",
    "samples_per_volume",
    "foreground_prob",
    "pad_mode",
    "clip_len",
    "clips_per_video",
    "sequential_clips",
}


def _print_card(dataset: str, storage: dict) -> None:
    from medshard.commands.report import inspect_table
    from medshard.shards.reader import open_dataset

    try:
        ds = open_dataset(dataset, **storage)
        tables = inspect_table(ds)
    except MedshardError as exc:
        fail(exc)
    for table in tables:
        console.print(table)


def verify(
    dataset: Annotated[str, typer.Argument(help="Dataset directory or s3:// URL.")],
    endpoint_url: EndpointUrl = None,
    cache_dir: CacheDir = None,
) -> None:
    """Check files against the card's checksums, shards against the manifest and indexes;
    a dataset at a URL object by object, each shard downloaded once."""
    from rich.filesize import decimal

    from medshard.shards.verify import verify_dataset

    try:
        report = verify_dataset(dataset, endpoint_url=endpoint_url, cache_dir=cache_dir)
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
    dataset: Annotated[str, typer.Argument(help="Dataset directory or s3:// URL.")],
    split: str = "train",
    batch_size: int = 32,
    workers: int = 2,
    repetitions: int = 3,
    patch_size: Annotated[str | None, typer.Option(help="Volumes: patch z,y,x from Zarr.")] = None,
    clip_len: Annotated[
        int | None, typer.Option(help="Video: clips of T frames from Zarr.")
    ] = None,
    max_batches: Annotated[int | None, typer.Option(help="Stop each run after this many.")] = None,
    resize: Annotated[
        str | None, typer.Option(help="Images: resize each to H,W (where their sizes differ).")
    ] = None,
    endpoint_url: EndpointUrl = None,
    cache_dir: CacheDir = None,
    cache_limit: CacheLimit = None,
) -> None:
    """Measure the engine's loader on a dataset, and the lazy per-file loader over its raw
    sources when the manifest still reaches them (decode and batch, no augmentation)."""
    from rich.table import Table

    from medshard.bench import bench_dataset
    from medshard.shards.reader import open_dataset

    try:
        ds = open_dataset(
            dataset, cache_dir=cache_dir, cache_limit=cache_limit, endpoint_url=endpoint_url
        )
        engine, baseline = bench_dataset(
            ds.path,  # a URL's cache folder: opened again, it reads through the same cache
            split=split,
            batch_size=batch_size,
            workers=workers,
            repetitions=repetitions,
            patch_size=parse_triple(patch_size),
            clip_len=clip_len,
            max_batches=max_batches,
            resize=parse_pair(resize) if resize else None,
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
        if any(field.startswith("train.") for field in ds.card.fields):
            console.print(
                "the engine reads the training copies made at ingest "
                f"({ds.card.options.get('train_size')}); the baseline decodes the original files"
            )
