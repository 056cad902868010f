"""`medshard demo`: the whole pipeline on embedded synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medshard.commands.common import console, fail
from medshard.errors import MedshardError


def demo(out: Annotated[Path | None, typer.Option(help="Keep everything here.")] = None) -> None:
    """The whole pipeline on small synthetic data: ingest all five workloads, train a 2D
    and a 3D model, benchmark the loader against lazy baselines, summarise."""
    from medshard.demo import run_demo

    try:
        run_demo(out, console)
    except MedshardError as exc:
        fail(exc)
