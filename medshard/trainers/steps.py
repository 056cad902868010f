"""One epoch of training steps and one validation pass, with the loss checked finite on
every rank, a progress bar on the main process, and the epoch's figures summed over
ranks. Gradient accumulation ends with the epoch, and a resumed epoch picks it up from
its position, so an epoch is the same optimizer steps however often it is
interrupted."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medshard.errors import MedshardError
from medshard.trainers.preemption import Flags, agree
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

    @classmethod
    def carried(cls, sums: dict | None, main: bool) -> EpochTally:
        """A resumed epoch's tally: the sums over all ranks before the interruption,
        counted once (on the main process)."""
        return cls(**sums) if sums and main else cls()

    def sums(self, accelerator) -> dict:
        """Loss, samples and seconds summed over all ranks (a collective)."""
        figures = [self.loss, self.samples, self.waited, self.seconds]
        loss, samples, waited, seconds = accelerator.reduce(
            torch.tensor(figures, device=accelerator.device, dtype=torch.float64), reduction="sum"
        ).tolist()
        return {"loss": loss, "samples": int(samples), "waited": waited, "seconds": seconds}

    def reduce(self, accelerator) -> dict:
        """The epoch's figures over all ranks."""
        total = self.sums(accelerator)
        loss, samples, waited, seconds = (
            total[k] for k in ("loss", "samples", "waited", "seconds")
        )
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


def check_finite(losses: list[float], epoch: int, step: int, lr: float) -> None:
    """Stop on a NaN or infinite loss on any rank; every rank has every rank's loss of the
    step (preemption.agree), before the backward pass, so none is left waiting in a
    collective."""
    bad = [value for value in losses if not math.isfinite(value)]
    if bad:
        raise NonFiniteLossError(
            f"epoch {epoch + 1}, step {step}: the training loss is {bad[0]}, so the run stops "
            f"here; check the inputs for NaN or infinite values, or lower the learning rate "
            f"(optim.lr={lr:g})"
        )


def train_step(
    model, batch: dict, task: Task, loss_fn, optimizer, accelerator, grad_clip, where, asks
) -> tuple[float, Flags]:
    """Forward, backward and (at the end of an accumulation) an optimizer step; `where`
    is (epoch, step) for the message of a non-finite loss; `asks()` gives this rank's
    requests, and every rank's come back."""
    with accelerator.accumulate(model):
        loss = compute_loss(task, loss_fn, model(batch["image"]), batch)
        losses, flags = agree(accelerator, loss, asks())
        check_finite(losses, *where, optimizer.param_groups[0]["lr"])
        accelerator.backward(loss)
        if accelerator.sync_gradients and grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad()
    return loss.item(), flags


@contextmanager
def epoch_progress(total: int, done: int, epoch: int, show: bool):
    """A progress bar for one epoch, `done` batches of `total` already behind it; yields
    `update(tally)`."""
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
        bar = progress.add_task(
            "train", total=total, completed=done, epoch=epoch + 1, loss=0.0, rate=0.0, wait=0.0
        )

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


# Called after an optimizer step inside the epoch: (batches done, tally, every rank's flags).
Boundary = Callable[[int, "EpochTally", Flags], None]


def train_epoch(
    model,
    loader,
    task: Task,
    loss_fn,
    optimizer,
    accelerator,
    epoch: int,
    optim,
    show: bool,
    *,
    done: int = 0,
    tally: EpochTally | None = None,
    asks: Callable[[], Flags] = Flags,
    boundary: Boundary | None = None,
) -> EpochTally:
    """Train on this rank's share of one epoch, or of what is left of it after `done`
    batches (`tally` holds what they counted); `optim` is the config's optim section
    (gradient clipping, accumulation), `show` the progress bar. `asks` gives this rank's
    requests before each step, and `boundary` is called after each optimizer step but
    the epoch's last."""
    grad_clip, accumulate = optim.grad_clip, accelerator.gradient_accumulation_steps
    model.train()
    tally = tally or EpochTally()
    total = done + len(loader)
    started = ready = time.perf_counter() - tally.seconds
    with epoch_progress(total, done, epoch, show) as update:
        for step, batch in enumerate(loader, start=done + 1):
            tally.waited += time.perf_counter() - ready
            # Accumulation restarts with each epoch and its last batch always steps the
            # optimizer (as Accelerate does for its own loaders), so that the counter is a
            # function of the batch number: a resumed epoch needs nothing else saved.
            accelerator.step = accumulate - 1 if step == total else (step - 1) % accumulate
            where = (epoch, step)
            loss, flags = train_step(
                model, batch, task, loss_fn, optimizer, accelerator, grad_clip, where, asks
            )
            tally.loss += loss * len(batch["key"])
            tally.samples += len(batch["key"])
            tally.keys.extend(batch["key"])
            tally.seconds = time.perf_counter() - started
            update(tally)
            if boundary is not None and accelerator.sync_gradients and step < total:
                boundary(step, tally, flags)
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
    if task.name == "byol":  # the loss on two views, and the k-NN probe
        from medshard.trainers.pretrain import validate_byol

        return validate_byol(model, loader, task, loss_fn, metrics, accelerator)
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
