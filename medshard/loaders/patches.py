"""Random 3D patches into batch slots with one copy. Each sample's spatial draw (flips,
quarter turns) becomes the view its slot is written through, so the patch goes from the
page cache to its place in the batch once; the intensity plan then runs in place on the
slot, one pass per step and channel, only for the steps that were drawn. On a GPU the
patch is read as stored and everything after the read runs on the device."""

from __future__ import annotations

import threading

import numpy as np
import torch

from medshard.loaders.augment import sample_generator
from medshard.loaders.augment3d import (
    Draw3D,
    augment_3d,
    draw_3d,
    intensity_plan,
    orient,
    resample,
    run_plan,
    write_view,
)
from medshard.loaders.fetching import fetched
from medshard.loaders.slots import Filler
from medshard.loaders.sources import PatchSamples
from medshard.loaders.transforms import VolumeTransform

__all__ = ["PatchFiller"]


def _direct(view: np.ndarray) -> bool:
    """Whether copying into `view` is as fast as into a plain array: its last axis runs
    forward in memory. A copy through a reversed or turned last axis is several times
    slower than one into a scratch patch followed by the turned copy from the cache."""
    return view.strides[-1] == view.itemsize


class PatchFiller(Filler):
    """Puts patches of `source` into batches, augmented as `transform` says."""

    def __init__(self, source: PatchSamples, transform: VolumeTransform):
        self.source, self.transform = source, transform
        self.shape = (source.channels, *source.patch)
        rows = source.rows
        first = f"{rows.paths[0]}/labels/mask"
        self.mask_dtype = (
            fetched(source, 0, lambda: source.reader.dtype(first)) if source.masked else None
        )
        self._local = threading.local()

    def layout(self, size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        layout = {
            "image": ((size, *self.shape), np.dtype(np.float32)),
            "origin": ((size, 3), np.dtype(np.int64)),
            "index": ((size,), np.dtype(np.int64)),
            "storage": ((size, self.shape[0], 2), np.dtype(np.float64)),
        }
        if self.mask_dtype is not None:
            layout["mask"] = ((size, *self.shape[1:]), np.dtype(self.mask_dtype))
        for name, column in self.source.rows.labels.items():
            layout[name] = ((size, *column.shape[1:]), column.dtype)
        return layout

    def _draw(self, index: int, epoch: int) -> Draw3D:
        t = self.transform
        if not t.training:
            return Draw3D()
        return draw_3d(t.config, sample_generator(t.seed, epoch, index), self.source.patch)

    def _scratch(self) -> tuple[np.ndarray, np.ndarray | None]:
        local = self._local
        if getattr(local, "image", None) is None:
            local.image = np.empty(self.shape, np.float32)
            masked = self.mask_dtype is not None
            local.mask = np.empty(self.shape[1:], self.mask_dtype) if masked else None
        return local.image, local.mask

    def fill(self, arrays: dict, slot: int, index: int, epoch: int, drawn: object = None) -> None:
        source = self.source
        origin = source.origin(index, epoch)
        storage = source.storage(index)
        arrays["origin"][slot] = origin
        arrays["index"][slot] = index
        arrays["storage"][slot] = storage
        row = index // source.per_volume
        for name, column in source.rows.labels.items():
            arrays[name][slot] = column[row]
        image = arrays["image"][slot]
        mask = arrays["mask"][slot] if "mask" in arrays else None
        if self.transform.on_device:  # the device augments the whole batch
            source.read(index, origin, image, mask)
            return
        draw = self._draw(index, epoch)
        views = write_view(image, draw), None if mask is None else write_view(mask, draw)
        if _direct(views[0]):
            source.read(index, origin, *views)
        else:
            scratch, scratch_mask = self._scratch()
            source.read(index, origin, scratch, scratch_mask)
            image[...] = orient(scratch, draw)
            if mask is not None:
                mask[...] = orient(scratch_mask, draw)
        if draw.affine is not None:
            tensors = torch.from_numpy(image), None if mask is None else torch.from_numpy(mask)
            moved, moved_mask = resample(*tensors, draw)
            image[...] = moved.numpy()
            if mask is not None:
                mask[...] = moved_mask.numpy()
        t = self.transform
        run_plan(image, intensity_plan(t.config, draw, t.stats, storage, self.shape[0]))

    def finish(self, batch: dict, epoch: int) -> dict:
        """On the device: each sample augmented with its own draw (stored values in)."""
        storage = batch.pop("storage")
        t = self.transform
        if not t.on_device:
            return batch
        masks = batch.get("mask")
        for slot, index in enumerate(batch["index"].tolist()):
            generator = sample_generator(t.seed, epoch, index) if t.training else None
            image, mask = augment_3d(
                batch["image"][slot],
                None if masks is None else masks[slot],
                t.config,
                generator,
                t.stats,
                storage[slot].tolist(),
            )
            batch["image"][slot] = image
            if masks is not None:
                masks[slot] = mask
        return batch
