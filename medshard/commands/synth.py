"""`medshard synth WORKLOAD OUT`: synthetic raw data in the workloads' layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medshard.commands.common import (
    console,
    parse_triple,
)

synth_app = typer.Typer(
    help="Write small synthetic raw datasets in real layouts.", no_args_is_help=True
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

    console.print(f"wrote {synth_nuclei_3d(out, n=n, seed=seed, shape=parse_triple(shape))}")


@synth_app.command("fomo-mri")
def synth_mri(
    out: Path,
    n: int = 12,
    seed: int = 0,
    shape: Annotated[str, typer.Option(help="Volume x,y,z.")] = "48,56,40",
) -> None:
    """Multi-modal NIfTI subjects (FLAIR, DWI, ADC, seg) with participants.csv."""
    from medshard.synth.volumes import synth_fomo_mri

    console.print(f"wrote {synth_fomo_mri(out, n=n, seed=seed, shape=parse_triple(shape))}")


@synth_app.command("ivf-timelapse")
def synth_ivf(out: Path, n: int = 12, seed: int = 0, frames: int = 24) -> None:
    """Embryo time-lapse sequences: mp4 files and frame folders, with index.csv."""
    from medshard.synth.video import synth_ivf_timelapse

    console.print(f"wrote {synth_ivf_timelapse(out, n=n, seed=seed, frames=frames)}")
