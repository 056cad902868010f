"""Mid-epoch checkpoints: when one is due (every N optimizer steps, every M minutes, or a
preemption signal on any rank), what it holds, and the stop that follows a signal.

A checkpoint is taken only at an optimizer step, never inside an accumulation, so that
no gradient is lost; with `checkpoint.validation`, the validation runs first and its
record goes into the checkpoint, so a validation interrupted before the checkpoint is
complete is run again whole after a resume, never counted half."""

from __future__ import annotations

from collections.abc import Callable

import torch

from medshard.trainers.checkpoint import TrainingState
from medshard.trainers.config import CheckpointConfig
from medshard.trainers.geometry import BatchGeometry
from medshard.trainers.preemption import (
    CheckpointClock,
    Flags,
    Preempted,
    StopRequests,
    signal_name,
)
from medshard.trainers.records import RunFolder
from medshard.trainers.steps import EpochTally

__all__ = ["MidEpoch"]


class MidEpoch:
    """The mid-epoch checkpoints of one run; `asks` and `boundary` go to train_epoch."""

    def __init__(
        self,
        options: CheckpointConfig,
        stops: StopRequests,
        run: RunFolder,
        accelerator,
        geometry: BatchGeometry,
        validations: list[dict],
        log: Callable[[str], None],
    ):
        self.options, self.stops, self.run, self.log = options, stops, run, log
        self.accelerator, self.geometry = accelerator, geometry
        self.clock = CheckpointClock(options.every_steps, options.every_minutes)
        self.validations = list(validations)
        self.pending = Flags()  # what every rank has asked for since the last checkpoint

    def begin(self, epoch: int, loader, history: list[dict], validate: Callable) -> None:
        """Before an epoch's steps: what its checkpoints save; `validate()` gives the
        validation scores and keys and leaves the model training."""
        self.epoch, self.loader, self.history, self.validate = epoch, loader, history, validate
        self.start = loader.position

    def asks(self) -> Flags:
        """This rank's requests before a step."""
        return Flags(stop=self.stops.signal, late=self.clock.late())

    def boundary(self, step: int, tally: EpochTally, flags: Flags) -> None:
        """After the optimizer step that ends batch `step`: checkpoint when due, and stop
        when a signal asked for it. `flags` are every rank's, so all ranks agree."""
        self.pending |= flags
        optimizer_step = step // self.geometry.accumulate
        if not (self.pending.stop or self.pending.late or self.clock.step_due(optimizer_step)):
            return
        validated: list[str] = []
        if self.options.validation:
            scores, validated = self.validate()
            where = {"epoch": self.epoch + 1, "step": step, "position": self.loader.position}
            self.validations.append(where | scores)
            self.log(f"epoch {self.epoch + 1}, step {step}: val loss {scores['val_loss']:.4f}")
        state = TrainingState(
            epoch=self.epoch,
            step=step,
            loader=self.loader.state_dict(),
            history=self.history,
            tally=tally.sums(self.accelerator),
            batch=self.geometry.as_dict(),
            validations=self.validations,
        )
        self.run.save_step(state, self.run.audit(self.epoch, self.start, tally.keys, validated))
        self.clock.reset()
        stop, self.pending = self.pending.stop, Flags()
        if stop:
            raise self._preempted(stop, f"epoch {self.epoch + 1} step {step}")

    def after_epoch(self, steps: int) -> None:
        """After the checkpoint of an epoch of `steps` batches: stop if a signal reached
        any rank since its last step (one collective)."""
        self.clock.reset()
        self.pending = Flags()
        asked = torch.tensor([float(self.stops.signal)], device=self.accelerator.device)
        stop = int(self.accelerator.gather(asked).max().item())
        if stop:
            where = f"epoch {self.epoch + 1} step {steps} (the epoch complete)"
            raise self._preempted(stop, where)

    def _preempted(self, number: int, where: str) -> Preempted:
        return Preempted(
            f"stopped by {signal_name(number)}: checkpointed at {where} in "
            f"{self.run.path / 'last'}; run "
            "the same command with --resume to continue",
            main=self.accelerator.is_main_process,
        )
