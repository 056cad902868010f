"""The torch backend: a DataLoader over planned batches. Workers read, decode and (for 2D
images, or on a CPU) augment; on a GPU the fixed-size 3D and clip batches are augmented
on the device. Also the `Loader` protocol every backend follows."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from medshard.errors import DatasetError
from medshard.loaders.partition import (
    Uneven,
    num_batches,
    rank_batches,
    rank_indices,
    worker_batches,
)
from medshard.loaders.topology import worker_info

__all__ = ["LoaderState", "TorchLoader", "collate"]


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
    skip: int = 0  # batches of this epoch already consumed (resume)
    yielded: int = 0  # batches yielded so far in this epoch
    skipped_samples: int = field(default=0)  # bad samples skipped with on_error="skip"


class _PlannedBatches(IterableDataset):
    """Yields the batches of one epoch's plan that belong to this DataLoader worker."""

    def __init__(
        self,
        source,
        batches: list[np.ndarray],
        epoch: int,
        skip: int,
        transform: Callable | None,
        on_error: str,
        threads: int,
    ):
        self.source, self.batches, self.epoch, self.skip = source, batches, epoch, skip
        self.transform, self.on_error, self.threads = transform, on_error, threads

    def _load(self, index: int) -> dict | None:
        try:
            sample = self.source.load(int(index), self.epoch)
        except DatasetError:
            if self.on_error == "fail":
                raise
            return None
        return self.transform(sample, int(index), self.epoch) if self.transform else sample

    def __iter__(self) -> Iterator[tuple[int, dict, int]]:
        worker, workers = worker_info()
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:  # chunk reads overlap
            for number, indices in worker_batches(self.batches, worker, workers, self.skip):
                samples = list(pool.map(self._load, indices))
                kept = [s for s in samples if s is not None]
                if not kept:
                    raise DatasetError(f"every sample of batch {number} failed to load")
                yield number, collate(kept), len(samples) - len(kept)


class TorchLoader:
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
        on_error: str = "fail",
        threads: int = 4,
    ):
        self.source = source
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.uneven, self.drop_last = uneven, drop_last
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.device = num_workers, device
        self.worker_transform, self.device_transform = worker_transform, device_transform
        self.on_error, self.threads = on_error, threads
        self.state = LoaderState()

    def __len__(self) -> int:
        per_rank = len(
            rank_indices(
                len(self.source),
                self.seed,
                0,
                self.rank,
                self.world_size,
                shuffle=False,
                uneven=self.uneven,
            )
        )
        return num_batches(per_rank, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.state.epoch:
            self.state = LoaderState(epoch=epoch)

    def state_dict(self) -> dict:
        return {
            "epoch": self.state.epoch,
            "batches": self.state.skip + self.state.yielded,
            "seed": self.seed,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        for name in ("seed", "world_size", "batch_size"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"cannot resume: the state was saved with {name}={state[name]}, "
                    f"this loader has {name}={getattr(self, name)}"
                )
        self.state = LoaderState(epoch=state["epoch"], skip=state["batches"])

    def plan(self) -> list[np.ndarray]:
        """This epoch's batches of source indices for this rank."""
        return rank_batches(
            len(self.source),
            self.seed,
            self.state.epoch,
            self.rank,
            self.world_size,
            self.batch_size,
            shuffle=self.shuffle,
            uneven=self.uneven,
            drop_last=self.drop_last,
        )

    def __iter__(self) -> Iterator[dict]:
        state = self.state
        dataset = _PlannedBatches(
            self.source,
            self.plan(),
            state.epoch,
            state.skip,
            self.worker_transform,
            self.on_error,
            self.threads,
        )
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
        )
        state.yielded = 0
        for number, batch, skipped in loader:
            if number != state.skip + state.yielded:  # DataLoader collects workers round-robin
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
        # the next pass over this loader starts the epoch from its first batch
        self.state = LoaderState(epoch=state.epoch, skipped_samples=state.skipped_samples)
