"""Stopping for preemption, and when a mid-epoch checkpoint is due.

SIGTERM and SIGUSR1 (what Kubernetes, SLURM and torchrun send before they stop a job)
only raise a flag. Each training step gathers every rank's flags with its loss, so all
ranks learn of a request at the same step and checkpoint together at the next optimizer
step; then the run stops with `Preempted`, which the command line turns into exit status
`EXIT_PREEMPTED`."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

import torch

from medshard.errors import MedshardError

__all__ = [
    "EXIT_PREEMPTED",
    "CheckpointClock",
    "Flags",
    "Preempted",
    "StopRequests",
    "agree",
    "signal_name",
]

EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: try again later, here with --resume
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(MedshardError):
    """A signal asked the run to stop: it checkpointed and stopped; `--resume` continues.
    `main` tells the process that should print the message."""

    def __init__(self, message: str, *, main: bool = True):
        super().__init__(message)
        self.main = main


class StopRequests:
    """While entered, SIGTERM and SIGUSR1 set `signal` (the first one's number) instead
    of ending the process; the previous handlers come back on exit. Outside the main
    thread, where Python takes no handlers, it does nothing."""

    def __init__(self) -> None:
        self.signal = 0
        self._previous: dict = {}

    def _handle(self, number: int, _frame) -> None:
        self.signal = self.signal or number

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}


class CheckpointClock:
    """When a mid-epoch checkpoint is due: after every `every_steps`-th optimizer step of
    an epoch, or once `every_minutes` have passed since the last checkpoint."""

    def __init__(self, every_steps: int | None, every_minutes: float | None):
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self.reset()

    def reset(self) -> None:
        self.since = time.monotonic()

    def late(self) -> bool:
        """Whether the minutes are up on this rank (ranks then agree through `agree`)."""
        minutes = self.every_minutes
        return minutes is not None and time.monotonic() - self.since >= 60 * minutes

    def step_due(self, optimizer_step: int) -> bool:
        return self.every_steps is not None and optimizer_step % self.every_steps == 0


@dataclass(frozen=True)
class Flags:
    """What the ranks have asked for by this step: to stop (the number of the signal
    that asked, 0: none), or a checkpoint (the clock)."""

    stop: int = 0
    late: bool = False

    def __or__(self, other: Flags) -> Flags:
        return Flags(max(self.stop, other.stop), self.late or other.late)


def agree(accelerator, loss: torch.Tensor, flags: Flags) -> tuple[list[float], Flags]:
    """Every rank's loss and the flags of any rank, in one gather: the same answer on
    every rank, so all of them act at the same step."""
    asks = torch.tensor([flags.stop, flags.late], dtype=torch.float32, device=loss.device)
    mine = torch.cat([loss.detach().float().reshape(1), asks])
    everyone = accelerator.gather(mine.reshape(1, 3)).reshape(-1, 3)
    stop, late = everyone[:, 1].max().item(), everyone[:, 2].max().item()
    return everyone[:, 0].tolist(), Flags(stop=int(stop), late=bool(late))


def signal_name(number: int) -> str:
    return signal.Signals(number).name
