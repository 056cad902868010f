"""Per-sample transforms of the torch backend (picklable, so they travel to workers):
numpy sample -> augmented tensors, seeded by (seed, epoch, sample index)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from medshard.loaders.augment import Augment2D, Augment3D, augment_2d, augment_3d, sample_generator
from medshard.loaders.frame_format import bit_depth_scale

__all__ = ["FrameTransform", "VolumeTransform"]


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a possibly read-only array (tensorstore returns those): safe here
    because every augmentation starts from a float copy and never writes to its input."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


@dataclass(frozen=True)
class FrameTransform:
    """2D images (C, H, W) and clips (T, C, H, W): each scaled by its own bit depth, given
    `channels` (else the config's), resized, augmented, normalised."""

    config: Augment2D
    seed: int
    training: bool
    stats: tuple[list[float], list[float]] | None  # per-channel mean and std, unit scale
    channels: int | None = None

    def __call__(self, sample: dict, index: int, epoch: int) -> dict:
        image = sample["image"]
        generator = sample_generator(self.seed, epoch, index) if self.training else None
        sample["image"] = augment_2d(
            _tensor(image),
            self.config,
            generator,
            bit_depth_scale(image.dtype),
            self.stats,
            self.channels,
        )
        return sample


@dataclass(frozen=True)
class VolumeTransform:
    """3D patches or crops (C, D, H, W) with their masks. In a worker it augments; with
    `on_device` it only tags the sample, and `batch` augments on the device."""

    config: Augment3D
    seed: int
    training: bool
    stats: dict | None  # the card's mean, std, p0_5 and p99_5 per channel
    on_device: bool = False

    def _one(self, image: torch.Tensor, mask: torch.Tensor | None, index: int, epoch: int):
        generator = sample_generator(self.seed, epoch, index) if self.training else None
        return augment_3d(image, mask, self.config, generator, self.stats)

    def __call__(self, sample: dict, index: int, epoch: int) -> dict:
        sample["index"] = index
        if self.on_device:
            return sample
        mask = _tensor(sample["mask"]) if "mask" in sample else None
        sample["image"], mask = self._one(_tensor(sample["image"]), mask, index, epoch)
        if mask is not None:
            sample["mask"] = mask
        return sample

    def batch(self, batch: dict, epoch: int) -> dict:
        """Augment a batch already on the device, sample by sample with its own draw."""
        masks = batch.get("mask")
        out = [
            self._one(
                batch["image"][i],
                None if masks is None else masks[i],
                int(batch["index"][i]),
                epoch,
            )
            for i in range(len(batch["key"]))
        ]
        batch["image"] = torch.stack([image for image, _ in out])
        if masks is not None:
            batch["mask"] = torch.stack([mask for _, mask in out])
        return batch
