"""The loader of Zarr patches and clips: threads of this process read each sample once,
from the page cache straight into its slot of a preallocated batch, and augment it there.

Threads, not DataLoader worker processes: the reads and the numpy passes release the
GIL, every thread shares the reader's memory maps, and a batch never crosses a process
boundary (moving a 3 MB patch from a worker costs more than reading it; see
docs/performance.md). The order is the same pure function of (seed, epoch, rank, world
size) as the torch backend's, and so are resume and `on_error`."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import sys
from collections import deque
from collections.abc import Iterator

import numpy as np
import torch

from medshard.errors import DatasetError
from medshard.loaders.partition import Uneven
from medshard.loaders.readahead import FetchAhead
from medshard.loaders.torch_loader import LoaderIdentity, LoaderState, PlanSpec, Resumable

__all__ = ["Filler", "SlotLoader", "zarr_loader"]

_log = logging.getLogger(__name__)


class Filler:
    """How one kind of sample is put into a batch: images2d.ImageFiller,
    patches.PatchFiller, clips.ClipFiller."""

    source: object

    def layout(self, size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Each array of a batch of `size` samples: its shape and type."""
        raise NotImplementedError

    def draw(self, indices: np.ndarray, epoch: int) -> list | None:
        """What every sample of a batch draws, made at once where a filler can (one entry
        per sample, handed to its `fill`); None: each `fill` draws its own."""
        return None

    def fill(
        self, arrays: dict[str, np.ndarray], slot: int, index: int, epoch: int, drawn: object = None
    ) -> None:
        """Fill row `slot` of the batch's arrays (numpy views of its tensors) with sample
        `index`; `drawn`: its entry of `draw`."""
        raise NotImplementedError

    def begin_pass(self) -> None:
        """What to do as a pass over the plan starts, in the loader's thread."""

    def settle(self, arrays: dict[str, np.ndarray], rows: slice, kept: list[bool]) -> None:
        """What is left to do on one job's `rows` once each has been filled (`kept`:
        those that loaded), in the job's thread; nothing unless a filler says so."""

    def finish(self, batch: dict, epoch: int) -> dict:
        """The batch as it is delivered (on its device)."""
        raise NotImplementedError


class _Recycler:
    """Batch memory handed out again once nothing holds it (no tensor, view or array of
    it is alive: the array's reference count says so). Fresh pages cost the kernel a
    fault and zeroing each, more than reading a patch into them; a pinned batch (for a
    GPU) comes from torch's caching host allocator instead. A short batch (an epoch's
    last) is the first rows of a full one, so that it never pushes a full one out."""

    def __init__(self, keep: int):
        self.keep = keep
        self._batches: list[dict[str, np.ndarray]] = []

    def batch(self, layout: dict, rows: int, pin: bool) -> dict[str, torch.Tensor]:
        """The first `rows` rows of a batch of `layout` (full-size shapes)."""
        if pin:
            return {
                name: torch.empty((rows, *shape[1:]), dtype=_torch_dtype(dtype), pin_memory=True)
                for name, (shape, dtype) in layout.items()
            }
        for arrays in self._batches:
            free = all(sys.getrefcount(a) == 3 for a in arrays.values())  # dict, name, call
            if free and {n: (a.shape, a.dtype) for n, a in arrays.items()} == layout:
                break
        else:
            arrays = {name: np.empty(shape, dtype) for name, (shape, dtype) in layout.items()}
            self._batches = [*self._batches[-(self.keep - 1) :], arrays]
        return {name: torch.from_numpy(array[:rows]) for name, array in arrays.items()}


def _one_torch_thread() -> None:
    """A loader thread's torch operations (a resize) run in that thread alone: the loader's
    threads are the parallelism, and each one's own OpenMP team would spin on the cores
    the others use (the setting is the calling thread's; the training thread keeps its)."""
    torch.set_num_threads(1)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


class SlotLoader(Resumable):
    """Batches of one split for this rank, read by `threads` threads with `prefetch`
    batches in flight: `len()`, `set_epoch()`, `state_dict()`, `load_state_dict()`."""

    window = 4  # batches read ahead beyond those in flight

    def __init__(
        self,
        filler: Filler,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        uneven: Uneven,
        drop_last: bool,
        rank: int,
        world_size: int,
        device: torch.device,
        identity: LoaderIdentity,
        threads: int = 2,
        on_error: str = "fail",
        prefetch: int = 2,
        shuffle_shards: int | None = None,
    ):
        self.filler, self.source, self.identity = filler, filler.source, identity
        plan = PlanSpec(
            len(filler.source), batch_size, seed, shuffle, uneven, drop_last, rank, world_size
        )
        self.plan = plan.reading(filler.source, shuffle_shards)
        self.device, self.threads, self.on_error = device, max(1, threads), on_error
        self.prefetch = max(1, prefetch)
        self.state = LoaderState()
        self._memory = _Recycler(keep=self.prefetch + 3)

    def _fill(
        self, arrays: dict, slots: range, indices: np.ndarray, epoch: int, drawn: list | None
    ) -> list[bool]:
        """Fill `slots` with samples `indices` (`drawn`: what each drew): whether each one
        loaded."""
        kept = []
        for slot, index, draw in zip(slots, indices.tolist(), drawn or [None] * len(slots)):
            try:
                self.filler.fill(arrays, slot, index, epoch, draw)
            except DatasetError as exc:
                if self.on_error == "fail":
                    raise
                _log.warning("skipped: %s", exc)
                kept.append(False)
            else:
                kept.append(True)
        self.filler.settle(arrays, slice(slots.start, slots.stop), kept)
        return kept

    def _start(self, pool, indices: np.ndarray, epoch: int):
        layout = self.filler.layout(self.plan.batch_size)
        batch = self._memory.batch(layout, len(indices), pin=self.device.type == "cuda")
        arrays = {name: tensor.numpy() for name, tensor in batch.items()}  # no torch per sample
        batch["key"] = [self.source.key(int(i)) for i in indices]
        drawn = self.filler.draw(indices, epoch)
        # a few samples a job: a job's hand-over between threads costs as much as a small
        # sample's copy, and more jobs than threads keep them busy until the batch ends
        step = max(1, -(-len(indices) // (4 * self.threads)))
        jobs = [
            pool.submit(
                self._fill,
                arrays,
                range(s, s + step),
                indices[s : s + step],
                epoch,
                drawn and drawn[s : s + step],
            )
            for s in range(0, len(indices), step)
        ]
        return batch, jobs

    def _deliver(self, number: int, batch: dict, jobs: list, epoch: int) -> dict:
        kept = [ok for job in jobs for ok in job.result()]
        if not any(kept):
            raise DatasetError(f"every sample of batch {number} failed to load")
        if not all(kept):
            self.state.skipped_samples += kept.count(False)
            rows = torch.tensor([i for i, ok in enumerate(kept) if ok])
            batch = {
                name: [v for v, ok in zip(value, kept) if ok] if name == "key" else value[rows]
                for name, value in batch.items()
            }
        batch = {
            name: value.to(self.device, non_blocking=True)
            if isinstance(value, torch.Tensor)
            else value
            for name, value in batch.items()
        }
        return self.filler.finish(batch, epoch)

    def _ahead_window(self) -> int:
        """How many batches beyond the one delivered are read ahead: those in flight and
        `window` more."""
        return self.prefetch + 1 + self.window

    def _ahead(self):
        """What reads ahead of this pass's plan, with `advance(batch)` and `close()`: for
        a dataset at a URL, fetches into its cache (readahead.FetchAhead); else nothing."""
        dataset = getattr(self.source, "dataset", None)
        if dataset is None or dataset.mirror is None:
            return None
        key = self.source.stored_key

        def fetch(indices: np.ndarray) -> None:
            dataset.prefetch(dict.fromkeys(key(int(i)) for i in indices), ahead=True)

        return FetchAhead(fetch, self.pass_batches(), self._ahead_window(), dataset.location)

    def __iter__(self) -> Iterator[dict]:
        self.filler.begin_pass()
        ahead = self._ahead()
        try:
            if ahead is not None:
                ahead.advance(-1)
            with contextlib.closing(self._batches()) as batches:
                for number, batch in enumerate(batches):
                    if ahead is not None:
                        ahead.advance(number)
                    yield batch
        finally:
            if ahead is not None:
                ahead.close()

    def _batches(self) -> Iterator[dict]:
        state = self.state
        state.yielded = 0
        epoch = state.epoch
        plan = enumerate(self.pass_batches())  # from the resume position on
        pending: deque = deque()
        pool = concurrent.futures.ThreadPoolExecutor(self.threads, initializer=_one_torch_thread)
        try:
            for number, indices in plan:
                pending.append((number, *self._start(pool, indices, epoch)))
                if len(pending) <= self.prefetch:
                    continue
                state.yielded += 1
                yield self._deliver(*pending.popleft(), epoch)
            while pending:
                state.yielded += 1
                yield self._deliver(*pending.popleft(), epoch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        # the next pass over this loader starts the epoch again from its first batch
        self.state = LoaderState(epoch=state.epoch, skipped_samples=state.skipped_samples)


def zarr_loader(source, transform, *, threads: int, on_error: str = "fail", **common):
    """The SlotLoader of Zarr patches (PatchSamples with a VolumeTransform) or clips
    (ClipSamples with a FrameTransform); `common` are SlotLoader's plan arguments."""
    from medshard.loaders.clips import ClipFiller
    from medshard.loaders.patches import PatchFiller
    from medshard.loaders.sources import PatchSamples

    if isinstance(source, PatchSamples):
        filler = PatchFiller(source, transform)
    else:
        filler = ClipFiller(source, transform, on_device=common["device"].type == "cuda")
    return SlotLoader(filler, threads=threads, on_error=on_error, **common)
