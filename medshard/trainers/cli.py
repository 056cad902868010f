"""Entry point shared by `medshard train` and `accelerate launch -m medshard.trainers`."""

from __future__ import annotations

import argparse
import sys

from medshard.errors import MedshardError

__all__ = ["main", "run"]


def run(
    config_path: str,
    overrides: list[str],
    folds: int = 0,
    resume: bool = False,
    quiet: bool = False,
) -> dict:
    from medshard.trainers.config import load_config
    from medshard.trainers.kfold import train_folds
    from medshard.trainers.loop import train

    config = load_config(config_path, overrides)
    if folds:
        return train_folds(config, folds, resume=resume, quiet=quiet)
    return train(config, resume=resume, quiet=quiet)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="medshard.trainers", description=__doc__)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. epochs=5 loader.batch_size=8")
    parser.add_argument("--folds", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    from medshard.trainers.preemption import EXIT_PREEMPTED, Preempted

    try:
        run(args.config, args.overrides, args.folds, args.resume)
    except Preempted as exc:
        if exc.main:
            print(exc, file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except MedshardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
