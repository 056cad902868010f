"""`medshard derive DATASET --train-size 256`: training copies for an existing dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medshard.codecs import MAX_PIXELS
from medshard.commands.common import Scheduler, Workers, run_ingest

Opt = typer.Option


def derive(
    dataset: Annotated[Path, typer.Argument(help="An image dataset made by `medshard ingest`.")],
    train_size: Annotated[str, Opt(help="Longest side of each copy (256), or H,W.")],
    train_format: Annotated[str, Opt(help="raw (.npy), jpeg or png.")] = "raw",
    train_quality: Annotated[int, Opt(help="JPEG quality.")] = 90,
    max_pixels: Annotated[int, Opt(help="Refuse larger images (decompression bomb).")] = MAX_PIXELS,
    workers: Workers = None,
    scheduler: Scheduler = None,
) -> None:
    """Add a training copy of every image (decoded once, resized once) to a dataset, in place."""
    flags = dict(locals())
    # A sample whose copy cannot be made stops the run: a dataset never loses a sample.
    flags.update(out=flags.pop("dataset"), on_error="fail")
    from medshard.ingest.derive import DeriveOptions, derive_training_copies

    run_ingest(DeriveOptions, derive_training_copies, flags, done="derived")
