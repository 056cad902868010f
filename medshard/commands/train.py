"""`medshard train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medshard.commands.common import console, errors, fail
from medshard.errors import MedshardError


def train(
    ctx: typer.Context,
    config: Annotated[
        Path, typer.Argument(help="Training config (YAML), e.g. configs/embryo-stage.yaml.")
    ],
    folds: Annotated[int, typer.Option(help="Cross-validate over the dataset's K folds.")] = 0,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue from outputs/RUN/last, mid-epoch too (on any number of processes "
            "with the same global batch). SIGTERM or SIGUSR1 checkpoints and exits with 75."
        ),
    ] = False,
) -> None:
    """Train from a config, with key=value overrides (epochs=5 loader.batch_size=8). Under
    `accelerate launch -m medshard.trainers` the same run spans processes and nodes."""
    from medshard.trainers.cli import run
    from medshard.trainers.preemption import EXIT_PREEMPTED, Preempted

    try:
        result = run(str(config), list(ctx.args), folds, resume)
    except Preempted as exc:
        errors.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_PREEMPTED) from None
    except MedshardError as exc:
        fail(exc)
    shown = {k: v for k, v in result.items() if isinstance(v, (float, dict))}
    for name, value in shown.items():
        if isinstance(value, dict):
            low, high = value["ci95"]
            spread = f"+/- {value['std']:.4f} (95% CI {low:.4f} .. {high:.4f})"
            console.print(f"{name}: {value['mean']:.4f} {spread}")
        else:
            console.print(f"{name}: {value:.4f}")
