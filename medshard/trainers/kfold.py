"""K-fold cross-validation from the manifest's fold column: one run per fold, then the
mean, standard deviation and 95% confidence interval of each metric."""

from __future__ import annotations

import json
import math

from medshard.trainers.checkpoint import has_checkpoint
from medshard.trainers.config import ConfigError, TrainConfig
from medshard.trainers.loop import run_dir, train

__all__ = ["aggregate_folds", "train_folds"]


def aggregate_folds(per_fold: list[dict]) -> dict:
    """{metric: {mean, std, ci95: [low, high], values}} over the folds' scalar metrics;
    the interval is Student's t with K - 1 degrees of freedom."""
    from scipy import stats

    summary = {}
    names = [k for k, v in per_fold[0].items() if isinstance(v, (int, float)) and k != "epoch"]
    k = len(per_fold)
    for name in names:
        values = [fold[name] for fold in per_fold]
        mean = sum(values) / k
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1)) if k > 1 else 0.0
        half = stats.t.ppf(0.975, k - 1) * std / math.sqrt(k) if k > 1 else 0.0
        summary[name] = {
            "mean": mean,
            "std": std,
            "ci95": [mean - half, mean + half],
            "values": values,
        }
    return summary


def train_folds(
    config: TrainConfig, folds: int, *, resume: bool = False, quiet: bool = False
) -> dict:
    """Train fold 0 .. folds-1 and write `OUTPUT/NAME-folds.json`; with `resume`, the
    folds that have a checkpoint go on from it and the others start (a run preempted in
    fold k resumes fold k and then trains the folds after it)."""
    if folds < 2:
        raise ConfigError("--folds takes 2 or more")
    per_fold = []
    for k in range(folds):
        fold = config.model_copy(update={"fold": k})
        going_on = resume and has_checkpoint(run_dir(fold) / "last")
        per_fold.append(train(fold, resume=going_on, quiet=quiet))
    summary = aggregate_folds(per_fold)
    path = config.output_dir / f"{config.name}-folds.json"
    path.write_text(json.dumps({"folds": folds, "metrics": summary}, indent=2) + "\n")
    return summary
