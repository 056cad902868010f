"""Augmentations in torch, on whatever device the tensors are on. Each draws its parameters
from a generator seeded by (seed, epoch, sample), then applies a deterministic operation:
the same seed gives the same batch, and image and mask get the same spatial parameters.
Each 2D transform is defined once, for both backends, in loaders/chain2d.py; the 3D ones
in loaders/augment3d.py.

A 2D sample keeps its stored type through the geometric steps (alpha dropped, gray
repeated, cropped, flipped, turned, resized and rounded); its intensity steps, its bit
depth's scale and a colour-to-gray conversion are folded into one (weights, offset) per
sample, applied where the values first become floats (`to_float_2d`): per sample here,
once per batch in the torch backend's image loader (loaders/images2d.py)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, model_validator

from medshard.loaders.augment3d import Augment3D, augment_3d
from medshard.loaders.chain2d import (
    IMAGENET,
    Transform2D,
    chain_2d,
    chain_params,
    fold_intensity,
)
from medshard.loaders.frame_format import stored_channels
from medshard.loaders.seeds import derive_seed

__all__ = [
    "Augment2D",
    "Augment3D",
    "IMAGENET",
    "augment_2d",
    "augment_3d",
    "geometry_2d",
    "intensity_weights",
    "sample_generator",
    "to_float_2d",
]


class Augment2D(BaseModel):
    """2D images and video frames (a clip's frames share one draw)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resize: tuple[int, int] | None = None  # (H, W)
    random_crop: tuple[int, int] | None = None  # after resize; centre crop when not training
    # a box of a random area and aspect ratio, resampled to this (H, W); the whole image
    # when not training (instead of resize and random_crop)
    random_resized_crop: tuple[int, int] | None = None
    rrc_scale: tuple[float, float] = (0.08, 1.0)  # the box's share of the image's area
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # the box's width / height
    flip_h: bool = False
    flip_v: bool = False
    rot90: bool = False  # quarter turns on square outputs, half turns otherwise
    brightness: float = 0.0  # additive, on the [0, 1] scale
    contrast: float = 0.0  # multiplicative around 0.5: factor in [1 - c, 1 + c]
    normalize: Literal["card", "imagenet", "none"] = "card"
    channels: Literal[1, 3] | None = None  # output channels; None: the dataset's (card)

    @model_validator(mode="after")
    def _one_way_to_size(self) -> Augment2D:
        if self.random_resized_crop and (self.resize or self.random_crop):
            raise ValueError(
                "random_resized_crop sets the output size itself: leave out resize and random_crop"
            )
        low, high = self.rrc_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"rrc_scale must satisfy 0 < low <= high <= 1, not {self.rrc_scale}")
        if not 0 < self.rrc_ratio[0] <= self.rrc_ratio[1]:
            raise ValueError(f"rrc_ratio must be positive and increasing, not {self.rrc_ratio}")
        return self


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator that only this (seed, epoch, sample) draws from, whichever worker runs."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, index))


def geometry_2d(chain: list[Transform2D], params: list[dict], image: torch.Tensor) -> torch.Tensor:
    """The chain's geometric steps on stored values (their type kept)."""
    for transform, values in zip(chain, params):
        if transform.geometric:
            image = transform.torch(image, **values)
    return image


def intensity_weights(
    chain: list[Transform2D],
    params: list[dict],
    channels: int,
    scale: float,
    mix: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, offset (channels,)): the map from stored values to the chain's output;
    weights are a gain per channel, or with colour to gray (`mix`) a (channels, stored
    channels) matrix."""
    gain, offset = (
        np.broadcast_to(v, channels) for v in fold_intensity(chain, params, channels, scale)
    )
    weights = gain if mix is None else gain[:, None] * mix
    return weights.astype(np.float32), offset.astype(np.float32)


def to_float_2d(image: torch.Tensor, weights: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Stored values (N, Cs, H, W) -> float32 (N, C, H, W) by each sample's `weights`:
    a gain per channel (N, C) where C == Cs, else a matrix (N, C, Cs), and `offset`
    (N, C): the one pass where a batch becomes floats."""
    image = image.contiguous()  # reordering is cheaper in the stored type than in floats
    if image.device.type == "cpu":
        return torch.from_numpy(_to_float_numpy(image.numpy(), weights.numpy(), offset.numpy()))
    if weights.ndim == 2:
        out = torch.empty(image.shape, dtype=torch.float32, device=image.device)
        return out.copy_(image).mul_(weights[:, :, None, None]).add_(offset[:, :, None, None])
    mixed = torch.einsum("noc,nchw->nohw", weights, image.float())
    return mixed.add_(offset[:, :, None, None])


def _to_float_numpy(image: np.ndarray, weights: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """`to_float_2d` on a CPU, in numpy: one thread, where torch's OpenMP team would spin
    on cores that the loader's own threads are using."""
    if weights.ndim == 2:
        out = np.empty(image.shape, np.float32)
        np.copyto(out, image, casting="unsafe")
        out *= weights[:, :, None, None]
    else:
        out = np.einsum("noc,nchw->nohw", weights, image, dtype=np.float32)
    out += offset[:, :, None, None]
    return out


def augment_2d(
    image: torch.Tensor,
    config: Augment2D,
    generator: torch.Generator | np.ndarray | None,
    scale: float,
    stats: tuple[list[float], list[float]] | None,
    channels: int | None = None,
) -> torch.Tensor:
    """(..., C, H, W) stored values -> float32 with `channels` (else `config.channels`,
    else C without alpha), through the chain of loaders/chain2d.py; `generator` None
    means evaluation (no random ops, centre crop); `scale` maps stored values to [0, 1];
    `stats` are per channel in that unit scale."""
    x, mix = stored_channels(image, channels or config.channels)
    out_channels = x.shape[-3] if mix is None else mix.shape[0]
    chain = chain_2d(config, tuple(x.shape[-2:]), out_channels, stats)
    params = chain_params(chain, generator)
    x = geometry_2d(chain, params, x)
    weights, offset = intensity_weights(chain, params, out_channels, scale, mix)
    flat = x.reshape(-1, *x.shape[-3:])
    count = flat.shape[0]
    weights_t = torch.from_numpy(weights).to(x.device).expand(count, *weights.shape)
    offset_t = torch.from_numpy(offset).to(x.device).expand(count, *offset.shape)
    out = to_float_2d(flat, weights_t, offset_t)
    return out.reshape(*x.shape[:-3], *out.shape[-3:])
