"""Video clips into batch slots: the reading threads copy a clip's frames once from the
page cache into a uint8 slot (whole frames of the time-chunked Zarr array, so a clip
touches at most two chunks); then the 2D chain turns each slot into the batch's float
clip where the batch is, on the device of a GPU, or on a CPU in the training thread, whose
torch operations use the intra-op threads (a clip's read costs far less than its chain)."""

from __future__ import annotations

import numpy as np
import torch

from medshard.loaders.augment import augment_2d, sample_generator
from medshard.loaders.sources import ClipSamples
from medshard.loaders.transforms import FrameTransform

__all__ = ["ClipFiller"]


class ClipFiller:
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

    def fill(self, batch: dict, slot: int, index: int, epoch: int) -> None:
        source = self.source
        start = source.start(index, epoch)
        batch["start"][slot] = start
        batch["index"][slot] = index
        row = source.videos[index]
        for name, column in source.rows.labels.items():
            batch[name][slot] = torch.as_tensor(column[row])
        source.read(index, start, batch["frames"][slot].numpy())

    def finish(self, batch: dict, epoch: int) -> dict:
        frames, t = batch.pop("frames"), self.transform
        image = batch.pop("image", None)
        clips = [
            augment_2d(
                clip,
                t.config,
                sample_generator(t.seed, epoch, index) if t.training else None,
                255.0,  # stored video is 8-bit
                t.stats,
                t.channels,
            )
            for clip, index in zip(frames, batch["index"].tolist())
        ]
        if image is None:
            batch["image"] = torch.stack(clips)
        else:  # into the recycled batch memory
            batch["image"] = torch.stack(clips, out=image)
        return batch
