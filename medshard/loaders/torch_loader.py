"""The torch backend: a DataLoader whose workers each compute their own share of an
epoch's plan. Workers read, decode and (for 2D images, or on a CPU) augment; on a GPU the
fixed-size 3D and clip batches are augmented on the device.

Workers persist across epochs: no respawn cost per epoch. The epoch and the resume point
(the global position in the epoch) reach them through shared values, and each worker
derives its batches from those integers alone."""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, IterableDataset

from medshard.errors import DatasetError
from medshard.loaders.partition import (
    Uneven,
    num_batches,
    position_after,
    rank_batches,
    rank_count,
    worker_batches,
)
from medshard.loaders.topology import worker_info

__all__ = ["LoaderIdentity", "LoaderState", "Resumable", "TorchLoader", "collate"]

_log = logging.getLogger(__name__)


def collate(samples: list[dict]) -> dict:
    """Stack a list of samples into one batch dict of tensors (keys stay a list)."""
    batch: dict = {"key": [s["key"] for s in samples]}
    for name in samples[0]:
        if name == "key":
            continue
        values = [s[name] for s in samples]
        if isinstance(values[0], torch.Tensor):
            batch[name] = torch.stack(values)
        else:
            batch[name] = torch.as_tensor(np.stack([np.asarray(v) for v in values]))
    return batch


@dataclass
class LoaderState:
    epoch: int = 0
    start: int = 0  # global position in the epoch where this pass starts (resume)
    yielded: int = 0  # batches yielded so far in this pass
    skipped_samples: int = 0  # bad samples skipped with on_error="skip"


@dataclass(frozen=True)
class LoaderIdentity:
    """What a loader reads: a state resumes only a loader of the same dataset and split."""

    path: str
    fingerprint: str  # the dataset card's
    split: str
    fold: int | None = None


class Resumable:
    """`len`, `set_epoch`, `state_dict` and `load_state_dict` over `self.state` and
    `self.plan` for every backend. A state holds the global position in the epoch (how
    many samples of the epoch's order all ranks together have read), so it resumes on any
    number of ranks with any batch size; only a loader of the same dataset, split and
    fold, drawing the same order (seed, shuffle), takes it."""

    state: LoaderState
    identity: LoaderIdentity
    plan: PlanSpec

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.state.epoch:
            self.state = LoaderState(epoch=epoch, skipped_samples=self.state.skipped_samples)

    def __len__(self) -> int:
        """The number of batches of this pass: the epoch's, or what is left of it."""
        plan = self.plan
        count = rank_count(
            plan.num_samples, plan.rank, plan.world_size, plan.uneven, start=self.state.start
        )
        return num_batches(count, plan.batch_size, plan.drop_last)

    def pass_batches(self) -> list[np.ndarray]:
        """This rank's batches of this pass, from the pass's start position."""
        return self.plan.batches(self.state.epoch, self.state.start)

    @property
    def position(self) -> int:
        """How many samples of the epoch's order the ranks have read so far."""
        plan, state = self.plan, self.state
        done, batches = state.yielded, len(self)
        return position_after(
            plan.num_samples, state.start, plan.world_size, plan.batch_size, done, batches
        )

    def state_dict(self) -> dict:
        plan = self.plan
        return {
            "epoch": self.state.epoch,
            "position": self.position,
            "num_samples": plan.num_samples,
            "seed": plan.seed,
            "shuffle": plan.shuffle,
            "shuffle_shards": plan.shuffle_shards,
            "world_size": plan.world_size,  # as saved: a resume may run on another number
            "batch_size": plan.batch_size,
            "dataset": self.identity.fingerprint,
            "split": self.identity.split,
            "fold": self.identity.fold,
            "rank_state": self._rank_state(),
        }

    def _rank_state(self) -> dict | None:
        """What this rank alone needs to resume exactly (a backend's own checkpoint)."""
        return None

    def _resume_exactly(self, rank_state: dict | None) -> None:
        """Take the saved `_rank_state` of this very rank, position and batch size."""

    def load_state_dict(self, state: dict) -> None:
        mine, plan = self.identity, self.plan
        if state.get("dataset") != mine.fingerprint:
            raise DatasetError(
                f"{mine.path}: cannot resume from a loader state of another dataset "
                f"(fingerprint {str(state.get('dataset'))[:12]}, this dataset's is "
                f"{mine.fingerprint[:12]})"
            )
        if (state.get("split"), state.get("fold")) != (mine.split, mine.fold):
            raise DatasetError(
                f"{mine.path}: cannot resume from a loader state of split "
                f"{_role(state.get('split'), state.get('fold'))}, this loader reads split "
                f"{_role(mine.split, mine.fold)}"
            )
        if "position" not in state:
            raise DatasetError(
                f"{mine.path}: cannot resume from a loader state without a global position "
                "(one saved by an older medshard counted batches per rank); resume from the "
                "checkpoint of an epoch's end instead"
            )
        for name in ("seed", "shuffle", "shuffle_shards"):  # they fix the epoch's order
            if state.get(name) != getattr(plan, name):
                raise DatasetError(
                    f"{mine.path}: cannot resume from a loader state saved with "
                    f"{name}={state.get(name)}, this loader has {name}={getattr(plan, name)}, "
                    "so the epoch's order differs"
                )
        if not 0 <= state["position"] <= plan.num_samples:
            raise DatasetError(
                f"{mine.path}: cannot resume from position {state['position']}, past the "
                f"{plan.num_samples} samples of split {_role(mine.split, mine.fold)}"
            )
        self.state = LoaderState(
            epoch=state["epoch"],
            start=state["position"],
            skipped_samples=self.state.skipped_samples,
        )
        own = state.get("rank_state") or {}
        mine = (plan.rank, plan.world_size, plan.batch_size, state["epoch"], state["position"])
        fits = tuple(own.get(k) for k in ("rank", "world_size", "batch_size", "epoch", "position"))
        self._resume_exactly(own if fits == mine else None)


def _role(split, fold) -> str:
    return f"{split!r}" if fold is None else f"{split!r} of fold {fold}"


@dataclass(frozen=True)
class PlanSpec:
    """Everything that fixes an epoch's batches, apart from the epoch itself."""

    num_samples: int
    batch_size: int
    seed: int
    shuffle: bool
    uneven: Uneven
    drop_last: bool
    rank: int
    world_size: int
    shuffle_shards: int | None = None  # shuffled by runs of this many shards (partition.py)
    shards: np.ndarray | None = field(default=None, compare=False)  # each sample's shard

    def reading(self, source, shuffle_shards: int | None) -> PlanSpec:
        """This plan over `source`, shuffled by runs of `shuffle_shards` of its shards
        where it shuffles; `source` is told when it is read a few shards at a time (in
        evaluation order, one after another: `read_by_windows`, where it has it)."""
        window = shuffle_shards if self.shuffle else 1
        if window and hasattr(source, "read_by_windows"):
            source.read_by_windows(window)
        if not (self.shuffle and shuffle_shards):
            return self  # the order is the same without it
        return replace(self, shuffle_shards=shuffle_shards, shards=source.shards())

    def batches(self, epoch: int, start: int = 0) -> list[np.ndarray]:
        """This rank's batches of `epoch` from global position `start` on."""
        return rank_batches(
            self.num_samples,
            self.seed,
            epoch,
            self.rank,
            self.world_size,
            self.batch_size,
            shuffle=self.shuffle,
            uneven=self.uneven,
            drop_last=self.drop_last,
            start=start,
            shards=self.shards,
            window=self.shuffle_shards if self.shards is not None else None,
        )


class _PlannedBatches(IterableDataset):
    """Yields (batch number, batch, samples skipped) for this worker's share of the epoch."""

    def __init__(
        self,
        source,
        plan: PlanSpec,
        shared,
        transform: Callable | None,
        on_error: str,
        threads: int,
    ):
        self.source, self.plan, self.shared = source, plan, shared  # shared: (epoch, start)
        self.transform, self.on_error, self.threads = transform, on_error, threads

    def _load(self, index: int, epoch: int) -> dict | None:
        try:
            sample = self.source.load(int(index), epoch)
        except DatasetError as exc:
            if self.on_error == "fail":
                raise
            _log.warning("skipped: %s", exc)
            return None
        return self.transform(sample, int(index), epoch) if self.transform else sample

    def __iter__(self) -> Iterator[tuple[int, dict, int]]:
        epoch, start = self.shared[0].value, self.shared[1].value
        worker, workers = worker_info()
        mine = worker_batches(self.plan.batches(epoch, start), worker, workers)
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:  # reads overlap
            for number, indices in mine:
                samples = list(pool.map(lambda i: self._load(i, epoch), indices))
                kept = [s for s in samples if s is not None]
                if not kept:
                    raise DatasetError(f"every sample of batch {number} failed to load")
                yield number, collate(kept), len(samples) - len(kept)


def _leave_signals_to_the_trainer(_worker: int) -> None:
    """Workers ignore SIGUSR1, the signal that announces preemption (SLURM's `--signal`
    reaches every process of a job step): the trainer checkpoints, then shuts them down.
    (SIGTERM keeps its default: multiprocessing stops workers with it at exit.)"""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _worker_context():
    """Fork, as DataLoader does on Linux; but a process that has used tensorstore holds its
    thread pools, which a forked child cannot use, so then the workers come from a clean
    forkserver that has imported the loader stack once. (Like any non-fork start, that one
    re-imports a script's main module: keep the script's work under `if __name__ ==
    "__main__":`.)"""
    if "tensorstore" not in sys.modules:
        return mp.get_context("fork")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["medshard.loaders.build"])
    return context


class TorchLoader(Resumable):
    """Batches of one split for this rank: `len()`, `set_epoch()`, `state_dict()`,
    `load_state_dict()`; the order is a pure function of (seed, epoch, rank, world size)."""

    def __init__(
        self,
        source,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        uneven: Uneven,
        drop_last: bool,
        rank: int,
        world_size: int,
        num_workers: int,
        device: torch.device,
        worker_transform: Callable | None,
        device_transform: Callable | None,
        identity: LoaderIdentity,
        on_error: str = "fail",
        threads: int = 4,
        shuffle_shards: int | None = None,
    ):
        self.source, self.identity = source, identity
        plan = PlanSpec(len(source), batch_size, seed, shuffle, uneven, drop_last, rank, world_size)
        self.plan = plan.reading(source, shuffle_shards)
        self.batch_size, self.seed, self.world_size = batch_size, seed, world_size
        self.num_workers, self.device = num_workers, device
        self.device_transform = device_transform
        context = _worker_context() if num_workers else None
        self._shared = ((context or mp).Value("q", 0), (context or mp).Value("q", 0))
        self._dataset = _PlannedBatches(
            source, self.plan, self._shared, worker_transform, on_error, threads
        )
        self._context = context
        self._loader: DataLoader | None = None
        self.state = LoaderState()

    def _dataloader(self) -> DataLoader:
        if self._loader is None:
            workers = self.num_workers
            self._loader = DataLoader(
                self._dataset,
                batch_size=None,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                prefetch_factor=4 if workers else None,
                multiprocessing_context=self._context,
                worker_init_fn=_leave_signals_to_the_trainer,
                # its own generator: an iterator's base seed must not draw from torch's
                # global one, whose state a checkpoint saves (workers derive nothing from it)
                generator=torch.Generator(),
            )
        return self._loader

    def __iter__(self) -> Iterator[dict]:
        state = self.state
        self._shared[0].value, self._shared[1].value = state.epoch, state.start
        state.yielded = 0
        for number, batch, skipped in self._dataloader():
            if number != state.yielded:  # DataLoader collects workers round-robin
                raise RuntimeError(f"batch {number} arrived out of plan order")
            state.skipped_samples += skipped
            batch = {
                k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
            if self.device_transform is not None:
                batch = self.device_transform(batch, state.epoch)
            state.yielded += 1
            yield batch
        # the next pass over this loader starts the epoch again from its first batch
        self.state = LoaderState(epoch=state.epoch, skipped_samples=state.skipped_samples)
