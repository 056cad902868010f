"""Video clips into batch slots: a reading thread copies a clip's frames once from the page
cache into a uint8 slot (whole frames of the time-chunked Zarr array, so a clip touches
at most two chunks), then the 2D chain turns the slot into the batch's float clip: in the
same thread on a CPU (measured faster than the whole batch's chain in the training
thread, docs/performance.md), on the device on a GPU."""

from __future__ import annotations

import numpy as np
import torch

from medshard.loaders.augment import augment_2d, sample_generator
from medshard.loaders.slots import Filler
from medshard.loaders.sources import ClipSamples
from medshard.loaders.transforms import FrameTransform

__all__ = ["ClipFiller"]


class ClipFiller(Filler):
    """Puts clips of `source` into batches, augmented as `transform` says."""

    def __init__(self, source: ClipSamples, transform: FrameTransform, on_device: bool = False):
        self.source, self.transform, self.on_device = source, transform, on_device
        shape = source.rows.shapes[0]
        self.stored = (source.clip_len, source.channels, int(shape[1]), int(shape[2]))
        # what the chain makes of a clip: its shape and type, from one of zeros
        probe = transform({"image": np.zeros(self.stored, np.uint8)}, 0, 0)["image"]
        self.shape = tuple(probe.shape)
        self.dtype = probe.numpy().dtype

    def layout(self, size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        layout = {
            "start": ((size,), np.dtype(np.int64)),
            "index": ((size,), np.dtype(np.int64)),
            "frames": ((size, *self.stored), np.dtype(np.uint8)),
        }
        if not self.on_device:
            layout["image"] = ((size, *self.shape), np.dtype(self.dtype))
        for name, column in self.source.rows.labels.items():
            layout[name] = ((size, *column.shape[1:]), column.dtype)
        return layout

    def fill(self, arrays: dict, slot: int, index: int, epoch: int, drawn: object = None) -> None:
        source = self.source
        start = source.start(index, epoch)
        arrays["start"][slot] = start
        arrays["index"][slot] = index
        row = source.videos[index]
        for name, column in source.rows.labels.items():
            arrays[name][slot] = column[row]
        frames = arrays["frames"][slot]
        source.read(index, start, frames)
        if not self.on_device:
            arrays["image"][slot] = self._chain(torch.from_numpy(frames), index, epoch).numpy()

    def _chain(self, clip: torch.Tensor, index: int, epoch: int) -> torch.Tensor:
        t = self.transform
        generator = sample_generator(t.seed, epoch, index) if t.training else None
        return augment_2d(clip, t.config, generator, 255.0, t.stats, t.channels)  # 8-bit

    def finish(self, batch: dict, epoch: int) -> dict:
        frames = batch.pop("frames")
        if self.on_device:
            indices = batch["index"].tolist()
            batch["image"] = torch.stack(
                [self._chain(clip, index, epoch) for clip, index in zip(frames, indices)]
            )
        return batch
