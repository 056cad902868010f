"""What a run leaves in its folder, and the metric that judges its epochs.

`OUTPUT/NAME[-foldK]/` holds `config.yaml`, the `last/` and `best/` checkpoints,
`history.json` (one record per epoch), `metrics_val.json` (the best epoch's record),
`validations.json` (the mid-epoch validations, when asked for) and one `rankN.json` per
rank: the keys it trained on in the last epoch since the global position its process
started from, those it validated on, and a checksum of its weights, so that disjoint
reading, folds that keep their validation samples out of training, replicas in sync and
resumed epochs that read each sample once can be checked after a run."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
import yaml

from medshard.trainers.checkpoint import (
    TrainingState,
    copy_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from medshard.trainers.config import ConfigError, EarlyStopping, TrainConfig
from medshard.trainers.tasks import Task

__all__ = ["Monitor", "RunFolder", "epoch_line", "run_dir", "weights_sha256"]


def run_dir(config: TrainConfig) -> Path:
    suffix = f"-fold{config.fold}" if config.fold is not None else ""
    return config.output_dir / f"{config.name}{suffix}"


def epoch_line(record: dict, monitor: str) -> str:
    """One line on an epoch for the log."""
    line = f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
    line += f", val loss {record['val_loss']:.4f}"
    if monitor != "val_loss":  # a run without metrics (self-supervised) monitors its loss
        line += f", {monitor} {record.get(monitor, float('nan')):.4f}"
    return line


def weights_sha256(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Monitor:
    """The task's monitored metric (the validation loss where it is missing): whether an
    epoch improved on the best, and whether early stopping has run out of patience."""

    def __init__(self, task: Task, early: EarlyStopping | None, history: list[dict]):
        self.name, self.sign = task.monitor, 1 if task.mode == "max" else -1
        self.min_delta = early.min_delta if early else 0.0
        self.patience = early.patience if early else None
        self.best, self.stale = None, 0  # stale: epochs since the last improvement
        for record in history:  # a resumed run stops early where the whole run would
            self.update(record)

    def score(self, record: dict) -> float:
        """Higher is better."""
        return self.sign * record.get(self.name, -self.sign * record["val_loss"])

    def update(self, record: dict) -> bool:
        """Whether `record` improves on the best so far."""
        score = self.score(record)
        improved = self.best is None or score > self.best + self.min_delta
        self.best, self.stale = (score, 0) if improved else (self.best, self.stale + 1)
        return improved

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience


class RunFolder:
    """The run's folder: every rank calls its methods; the main process writes the
    shared files."""

    def __init__(self, path: Path, accelerator, *, model, optimizer, scheduler):
        self.path, self.accelerator = path, accelerator
        self.parts = dict(accelerator=accelerator, model=model, optimizer=optimizer)
        self.parts["scheduler"] = scheduler

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def resume(self, config: TrainConfig) -> TrainingState:
        """Restore the `last/` checkpoint into the model, optimizer, scheduler and RNG;
        returns where the run stands. A run resumed for more (or fewer) epochs than it was
        started with gets its cosine schedule stretched to the new end, never an epoch at
        a learning rate of zero."""
        state = load_checkpoint(self.path / "last", **self.parts)
        scheduler = self.parts["scheduler"]
        epochs = max(config.epochs, 1)
        if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and (
            scheduler.T_max != epochs  # the same schedule resumes exactly as it was
        ):
            scheduler.T_max = epochs
            done = min(scheduler.last_epoch, scheduler.T_max) / scheduler.T_max
            low = scheduler.eta_min
            for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = low + (base - low) * (1 + math.cos(math.pi * done)) / 2
        return state

    def refuse_a_started_run(self) -> None:
        """A new run never writes over a run that holds a checkpoint."""
        if (self.path / "last").exists():
            raise ConfigError(
                f"{self.path}: holds a run already; pass --resume to continue it, or give "
                "another output_dir or name"
            )

    def write_config(self, config: TrainConfig) -> None:
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
            (self.path / "config.yaml").write_text(text)

    def save_epoch(self, state: TrainingState, improved: bool, audit: dict) -> None:
        """After an epoch: the `last/` checkpoint, `best/` and its metrics when the epoch
        `improved`, the history, and this rank's `audit` (see `audit`)."""
        save_checkpoint(self.path / "last", state, **self.parts)
        history = state.history
        if self.main:
            if improved:
                copy_checkpoint(self.path / "last", self.path / "best")
                _write_json(self.path / "metrics_val.json", history[-1], indent=2)
            _write_json(self.path / "history.json", history, indent=2)
        self.write_audit(audit)

    def save_step(self, state: TrainingState, audit: dict) -> None:
        """Mid-epoch: the `last/` checkpoint, the validations so far, this rank's audit."""
        save_checkpoint(self.path / "last", state, **self.parts)
        if self.main and state.validations:
            _write_json(self.path / "validations.json", state.validations, indent=2)
        self.write_audit(audit)

    def audit(self, epoch: int, start: int, trained: list, validated: list) -> dict:
        """What this rank read in `epoch` from global position `start` on."""
        rank = self.accelerator.process_index
        model = self.accelerator.unwrap_model(self.parts["model"])
        return {
            "rank": rank,
            "epoch": epoch + 1,
            "start": start,
            "samples": sorted(trained),
            "validated": sorted(validated),
            "weights_sha256": weights_sha256(model),
        }

    def write_audit(self, audit: dict) -> None:
        _write_json(self.path / f"rank{audit['rank']}.json", audit)

    def best_metrics(self) -> dict:
        return json.loads((self.path / "metrics_val.json").read_text())


def _write_json(path: Path, value, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=indent) + "\n")
