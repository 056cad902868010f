"""One epoch of training steps and one validation pass, with the loss checked finite on
every rank, a progress bar on the main process, and the epoch's figures summed over
ranks."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medshard.errors import MedshardError
from medshard.trainers.tasks import Task

__all__ = ["EpochTally", "NonFiniteLossError", "train_epoch", "validate"]


class NonFiniteLossError(MedshardError, ArithmeticError):
    """The training loss became NaN or infinite: the run has diverged."""


@dataclass
class EpochTally:
    """What one rank saw in an epoch: summed loss, samples, seconds waiting for data and
    in all, and the keys it trained on."""

    loss: float = 0.0
    samples: int = 0
    waited: float = 0.0
    seconds: float = 0.0
    keys: list[str] = field(default_factory=list)

    def reduce(self, accelerator) -> dict:
        """The epoch's figures over all ranks."""
        figures = [self.loss, self.samples, self.waited, self.seconds]
        loss, samples, waited, seconds = accelerator.reduce(
            torch.tensor(figures, device=accelerator.device), reduction="sum"
        ).tolist()
        return {
            "train_loss": loss / samples,
            "samples_per_s": samples / (seconds / accelerator.num_processes),
            "data_wait_share": waited / seconds,
        }


def compute_loss(task: Task, loss_fn, output, batch: dict) -> torch.Tensor:
    target = task.target(batch)
    if task.name == "reconstruction":
        return loss_fn(output, target, batch.get("label"))
    return loss_fn(output, target)


def check_finite(loss: torch.Tensor, accelerator, epoch: int, step: int, lr: float) -> None:
    """Stop on a NaN or infinite loss on any rank; every rank learns it at the same step,
    before the backward pass, so that none is left waiting in a collective."""
    losses = accelerator.gather(loss.detach().float().reshape(1))
    bad = [value for value in losses.tolist() if not math.isfinite(value)]
    if bad:
        raise NonFiniteLossError(
            f"epoch {epoch + 1}, step {step}: the training loss is {bad[0]}, so the run stops "
            f"here; check the inputs for NaN or infinite values, or lower the learning rate "
            f"(optim.lr={lr:g})"
        )


def train_step(
    model, batch: dict, task: Task, loss_fn, optimizer, accelerator, grad_clip, where
) -> float:
    """Forward, backward and (at the end of an accumulation) an optimizer step; `where`
    is (epoch, step) for the message of a non-finite loss."""
    with accelerator.accumulate(model):
        loss = compute_loss(task, loss_fn, model(batch["image"]), batch)
        check_finite(loss, accelerator, *where, optimizer.param_groups[0]["lr"])
        accelerator.backward(loss)
        if accelerator.sync_gradients and grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad()
    return loss.item()


@contextmanager
def epoch_progress(total: int, epoch: int, show: bool):
    """A progress bar for one epoch; yields `update(tally)`."""
    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.4f} | {task.fields[rate]:.0f} samples/s | "
            "data wait {task.fields[wait]:.0%}"
        ),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not show) as progress:
        bar = progress.add_task("train", total=total, epoch=epoch + 1, loss=0.0, rate=0.0, wait=0.0)

        def update(tally: EpochTally) -> None:
            seconds = max(tally.seconds, 1e-9)
            progress.update(
                bar,
                advance=1,
                loss=tally.loss / tally.samples,
                rate=tally.samples / seconds,
                wait=tally.waited / seconds,
            )

        yield update


def train_epoch(
    model, loader, task: Task, loss_fn, optimizer, accelerator, epoch: int, optim, show: bool
) -> EpochTally:
    """Train on this rank's share of one epoch; `optim` is the config's optim section
    (gradient clipping), `show` the progress bar."""
    grad_clip = optim.grad_clip
    model.train()
    tally = EpochTally()
    started = ready = time.perf_counter()
    with epoch_progress(len(loader), epoch, show) as update:
        for step, batch in enumerate(loader, start=1):
            tally.waited += time.perf_counter() - ready
            where = (epoch, step)
            loss = train_step(model, batch, task, loss_fn, optimizer, accelerator, grad_clip, where)
            tally.loss += loss * len(batch["key"])
            tally.samples += len(batch["key"])
            tally.keys.extend(batch["key"])
            tally.seconds = time.perf_counter() - started
            update(tally)
            ready = time.perf_counter()
    return tally


def _plain(value):
    """Metric values as JSON: floats, or lists for per-class metrics."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def validate(model, loader, task: Task, loss_fn, metrics, accelerator) -> tuple[dict, list[str]]:
    """The validation loss and metrics over every rank's share, each sample once; and the
    keys this rank validated on."""
    model.eval()
    losses = torch.zeros(2, device=accelerator.device)
    keys: list[str] = []
    with torch.no_grad():
        for batch in loader:
            keys.extend(batch["key"])
            output = model(batch["image"])
            loss = compute_loss(task, loss_fn, output, batch).item()
            losses += torch.tensor(
                [loss * len(batch["key"]), len(batch["key"])], device=accelerator.device
            )
            task.update(metrics, output, batch)
    total = accelerator.reduce(losses, reduction="sum")
    values = {f"val_{name}": _plain(v) for name, v in metrics.compute().items()}
    metrics.reset()
    return {"val_loss": (total[0] / total[1].clamp_min(1)).item(), **values}, keys
