"""Augmentations in torch, on whatever device the tensors are on. Each draws its parameters
from a generator seeded by (seed, epoch, sample), then applies a deterministic operation:
the same seed gives the same batch, and image and mask get the same spatial parameters.
Each 2D transform is defined once, for both backends, in loaders/chain2d.py."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from medshard.loaders.chain2d import IMAGENET, chain_2d
from medshard.loaders.draws import Coin, Uniform
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


class Augment3D(BaseModel):
    """3D volumes (c, z, y, x) with their masks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flip_axes: tuple[int, ...] = ()  # spatial axes 0 (z), 1 (y), 2 (x), each flipped at p=0.5
    rot90_xy: bool = False  # quarter turns where y and x sizes match, half turns otherwise
    gamma: tuple[float, float] | None = None  # on intensities rescaled to [0, 1]
    contrast: tuple[float, float] | None = None
    noise_std: float = 0.0  # Gaussian noise, after normalisation
    normalize: Literal["card", "zscore", "none"] = "card"


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


def augment_3d(
    image: torch.Tensor,
    mask: torch.Tensor | None,
    config: Augment3D,
    generator: torch.Generator | None,
    stats: dict | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (c, z, y, x) volume and its (z, y, x) mask, with one spatial draw for both.
    `stats`: the card's per-channel mean, std, p0_5 and p99_5. Works in place on one
    float copy: on a CPU this runs once per sample in every worker."""
    x = image.float() if image.dtype != torch.float32 else image.clone()
    if generator is not None:
        dims = [axis for axis in config.flip_axes if Coin().torch(generator)]
        if dims:  # one copy for all flipped axes
            x = x.flip([d + 1 for d in dims])
            mask = None if mask is None else mask.flip(dims)
        if config.rot90_xy:
            k = int(torch.randint(0, 4, (), generator=generator))
            if x.shape[-2] != x.shape[-1]:
                k = 2 * (k % 2)  # quarter turns only where y and x are the same size
            if k:
                x = torch.rot90(x, k, dims=(2, 3))
                mask = None if mask is None else torch.rot90(mask, k, dims=(1, 2))
        if config.gamma or config.contrast:
            low = x.amin(dim=(1, 2, 3), keepdim=True)
            span = (x.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-8)
            x.sub_(low).div_(span)
            if config.gamma:
                x.pow_(Uniform(*config.gamma).torch(generator))
            if config.contrast:
                factor = Uniform(*config.contrast).torch(generator)
                x.sub_(0.5).mul_(factor).add_(0.5).clamp_(0, 1)
            x.mul_(span).add_(low)
    channels = x.shape[0]
    if config.normalize == "card" and stats is not None:

        def column(name: str) -> torch.Tensor:
            return torch.tensor(stats[name][:channels], device=x.device).view(-1, 1, 1, 1)

        x = torch.maximum(torch.minimum(x, column("p99_5")), column("p0_5"))
        x.sub_(column("mean")).div_(column("std").clamp_min(1e-8))  # nnU-Net's CT-style scheme
    elif config.normalize == "zscore":
        x.sub_(x.mean(dim=(1, 2, 3), keepdim=True)).div_(
            x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        )
    if generator is not None and config.noise_std:
        x.add_(torch.randn(x.shape, generator=generator).to(x.device), alpha=config.noise_std)
    return x.contiguous(), (None if mask is None else mask.contiguous())
