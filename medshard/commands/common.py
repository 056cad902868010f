"""What every command shares: the consoles, the one-sentence failure, and flag parsing."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = [
    "console",
    "errors",
    "fail",
    "parse_size",
    "parse_columns",
    "parse_triple",
    "command_line",
    "volume_flags",
    "report_ingest",
    "PatchSize",
    "Crops",
    "Spacing",
]

console = Console()
errors = Console(stderr=True)


def fail(exc: Exception) -> None:
    errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def parse_size(text: str) -> int:
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


def parse_columns(text: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip()) if text else ()


def command_line() -> str:
    return shlex.join(["medshard", *sys.argv[1:]])


def parse_triple(text: str | None, kind=int) -> tuple | None:
    if not text:
        return None
    values = tuple(kind(v) for v in text.split(","))
    if len(values) != 3:
        raise typer.BadParameter(f"{text!r}: give three comma-separated values, e.g. 64,64,64")
    return values


def volume_flags(
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
        patch_size=parse_triple(patch_size),
        crops=parse_triple(crops),
        spacing=parse_triple(spacing, float),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        folds=folds,
        seed=seed,
        shard_bytes=parse_size(shard_size),
        on_error=on_error,
        workers=workers,
        scheduler=scheduler,
        overwrite=overwrite,
    )


def report_ingest(result, out: Path) -> None:
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
