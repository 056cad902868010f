"""Augmentations in torch, on whatever device the tensors are on. Each draws its parameters
from a generator seeded by (seed, epoch, sample), then applies a deterministic operation:
the same seed gives the same batch, and image and mask get the same spatial parameters.
Each 2D transform is defined once, for both backends, in loaders/chain2d.py; the 3D ones
in loaders/augment3d.py."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from medshard.loaders.augment3d import Augment3D, augment_3d
from medshard.loaders.chain2d import IMAGENET, chain_2d
from medshard.loaders.frame_format import to_channels
from medshard.loaders.seeds import derive_seed

__all__ = ["Augment2D", "Augment3D", "sample_generator", "augment_2d", "augment_3d", "IMAGENET"]


class Augment2D(BaseModel):
    """2D images and video frames (a clip's frames share one draw)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resize: tuple[int, int] | None = None  # (H, W)
    random_crop: tuple[int, int] | None = None  # after resize; centre crop when not training
    flip_h: bool = False
    flip_v: bool = False
    rot90: bool = False  # quarter turns on square outputs, half turns otherwise
    brightness: float = 0.0  # additive, on the [0, 1] scale
    contrast: float = 0.0  # multiplicative around 0.5: factor in [1 - c, 1 + c]
    normalize: Literal["card", "imagenet", "none"] = "card"
    channels: Literal[1, 3] | None = None  # output channels; None: the dataset's (card)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator that only this (seed, epoch, sample) draws from, whichever worker runs."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, index))


def augment_2d(
    image: torch.Tensor,
    config: Augment2D,
    generator: torch.Generator | None,
    scale: float,
    stats: tuple[list[float], list[float]] | None,
    channels: int | None = None,
) -> torch.Tensor:
    """(..., C, H, W) stored values -> float32 with `channels` (else `config.channels`,
    else C without alpha), through the chain of loaders/chain2d.py; `generator` None
    means evaluation (no random ops, centre crop); `scale` maps stored values to [0, 1];
    `stats` are per channel in that unit scale."""
    x = to_channels(image.float() / scale, channels or config.channels)
    for transform in chain_2d(config, tuple(x.shape[-2:]), x.shape[-3], stats):
        x = transform.torch(x, **transform.params(generator))
    return x.contiguous()
