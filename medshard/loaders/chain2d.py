"""The 2D augmentation chain, defined once for both backends. Each transform names its
parameters, says how training draws each one (a distribution sampled from the sample's
seeded torch generator, or by the DALI random operator of the same distribution) and
which value evaluation uses, and does the same thing as a torch operation and as DALI
operators. `chain_2d` puts them in one order: resize, crop, flip, quarter turns,
contrast and brightness, normalisation.

Tensors are (..., C, H, W) in torch (a clip's frames share one draw) and HWC in DALI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medshard.loaders.draws import Choice, Coin, Draw, Uniform

if TYPE_CHECKING:
    from medshard.loaders.augment import Augment2D

__all__ = [
    "Crop",
    "Flip",
    "Jitter",
    "Normalize",
    "QuarterTurns",
    "Resize",
    "Transform2D",
    "chain_2d",
    "crop_anchor",
    "normalization",
    "resize_taps",
]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class Transform2D:
    """One step of the chain: `draws` (how training draws each parameter), `fixed` (every
    parameter's value in evaluation), and the operation as `torch` and as `dali`."""

    def draws(self) -> dict[str, Draw]:
        return {}

    def fixed(self) -> dict[str, Any]:
        return {}

    def params(self, generator: torch.Generator | None) -> dict[str, Any]:
        """Drawn from `generator` in its declared order; None: the evaluation values."""
        drawn = (
            {} if generator is None else {n: d.torch(generator) for n, d in self.draws().items()}
        )
        return self.fixed() | drawn

    def dali_params(self, training: bool) -> dict[str, Any]:
        drawn = {n: d.dali() for n, d in self.draws().items()} if training else {}
        return self.fixed() | drawn

    def torch(self, image: torch.Tensor, **params) -> torch.Tensor:
        raise NotImplementedError

    def dali(self, image, **params):
        raise NotImplementedError


@lru_cache(maxsize=256)
def resize_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel along one axis: the input pixels it reads (edge pixels
    repeated beyond the border) and their weights (summing to 1), as (index, weight)
    arrays of shape (size_out, taps)."""
    scale = size_in / size_out
    radius = max(scale, 1.0)  # a triangle as wide as the scale when shrinking: antialiasing
    centre = (np.arange(size_out) + 0.5) * scale - 0.5
    taps = np.floor(centre - radius)[:, None] + 1 + np.arange(math.ceil(2 * radius) + 1)
    weight = np.clip(1 - np.abs(taps - centre[:, None]) / radius, 0, None)
    weight /= weight.sum(axis=1, keepdims=True)
    return np.clip(taps, 0, size_in - 1).astype(np.int64), weight.astype(np.float32)


@dataclass(frozen=True)
class Resize(Transform2D):
    """Resample to `size` (H, W) with a linear filter, widened to the scale when shrinking
    (antialiasing), edge pixels repeated beyond the border: DALI's antialiased linear
    resize. Written out in torch because `F.interpolate` renormalises at the border
    instead of repeating the edge, and so differs in the outermost pixels."""

    size: tuple[int, int]

    def torch(self, image: torch.Tensor) -> torch.Tensor:
        for axis, size_out in ((-2, self.size[0]), (-1, self.size[1])):
            if image.shape[axis] == size_out:
                continue
            index, weight = (
                torch.from_numpy(a).to(image.device)
                for a in resize_taps(image.shape[axis], size_out)
            )
            picked = image.index_select(axis, index.flatten())
            if axis == -2:  # (..., out * taps, W) -> (..., out, taps, W)
                picked = picked.unflatten(-2, index.shape) * weight[:, :, None]
                image = picked.sum(-2)
            else:  # (..., H, out * taps) -> (..., H, out, taps)
                image = (picked.unflatten(-1, index.shape) * weight).sum(-1)
        return image

    def dali(self, image):
        from nvidia.dali import fn

        return fn.resize(image, resize_y=self.size[0], resize_x=self.size[1], antialias=True)


def crop_anchor(fraction: float, slack: int) -> int:
    """The first row (or column) of a crop at `fraction` of the `slack` (image size minus
    crop size): the fraction as a float32, times the slack, rounded half up, as DALI's
    crop computes it."""
    return math.floor(float(np.float32(fraction)) * slack + 0.5)


@dataclass(frozen=True)
class Crop(Transform2D):
    """Cut out `size` (H, W) at (`y`, `x`), each a fraction of the slack along its axis:
    0 is the top (left) edge, 1 the bottom (right). Training draws both uniformly from
    [0, 1); evaluation takes the centre."""

    size: tuple[int, int]

    def draws(self) -> dict[str, Draw]:
        return {"y": Uniform(0.0, 1.0), "x": Uniform(0.0, 1.0)}

    def fixed(self) -> dict[str, Any]:
        return {"y": 0.5, "x": 0.5}

    def torch(self, image: torch.Tensor, y: float, x: float) -> torch.Tensor:
        height, width = self.size
        top = crop_anchor(y, image.shape[-2] - height)
        left = crop_anchor(x, image.shape[-1] - width)
        return image[..., top : top + height, left : left + width]

    def dali(self, image, y, x):
        from nvidia.dali import fn

        return fn.crop(image, crop=self.size, crop_pos_y=y, crop_pos_x=x)


@dataclass(frozen=True)
class Flip(Transform2D):
    """Mirror left-right where `h` is 1 and top-bottom where `v` is 1; training tosses a
    coin for each direction that is enabled, evaluation flips nothing."""

    horizontal: bool
    vertical: bool

    def draws(self) -> dict[str, Draw]:
        return {name: Coin() for name, on in (("h", self.horizontal), ("v", self.vertical)) if on}

    def fixed(self) -> dict[str, Any]:
        return {"h": 0, "v": 0}

    def torch(self, image: torch.Tensor, h: int, v: int) -> torch.Tensor:
        dims = [-1] * bool(h) + [-2] * bool(v)
        return image.flip(dims) if dims else image

    def dali(self, image, h, v):
        from nvidia.dali import fn

        return fn.flip(image, horizontal=h, vertical=v)


@dataclass(frozen=True)
class QuarterTurns(Transform2D):
    """Turn counter-clockwise by `k` quarter turns, k drawn from 0..3. A quarter turn
    would change the shape of a non-square image, so there k counts as 2 * (k mod 2):
    half turns only. Evaluation does not turn."""

    square: bool

    def draws(self) -> dict[str, Draw]:
        return {"k": Choice((0, 1, 2, 3))}

    def fixed(self) -> dict[str, Any]:
        return {"k": 0}

    def turns(self, k):
        """The quarter turns made for a draw `k` (an int, or a DALI node)."""
        return k if self.square else k % 2 * 2

    def torch(self, image: torch.Tensor, k: int) -> torch.Tensor:
        turns = self.turns(k)
        return torch.rot90(image, turns, dims=(-2, -1)) if turns else image

    def dali(self, image, k):
        from nvidia.dali import fn, types

        angle = self.turns(k) * 90.0  # exact with nearest-neighbour sampling
        return fn.rotate(image, angle=angle, keep_size=True, interp_type=types.INTERP_NN)


@dataclass(frozen=True)
class Jitter(Transform2D):
    """Contrast around 0.5, then a brightness shift: x -> (x - 0.5) * c + 0.5 + b. Training
    draws c from [1 - contrast, 1 + contrast) and b from [-brightness, brightness); a
    strength of 0 leaves its parameter at 1 (c) or 0 (b), as in evaluation."""

    contrast: float
    brightness: float

    def draws(self) -> dict[str, Draw]:
        out: dict[str, Draw] = {}
        if self.contrast:
            out["c"] = Uniform(1 - self.contrast, 1 + self.contrast)
        if self.brightness:
            out["b"] = Uniform(-self.brightness, self.brightness)
        return out

    def fixed(self) -> dict[str, Any]:
        return {"c": 1.0, "b": 0.0}

    def torch(self, image: torch.Tensor, c: float, b: float) -> torch.Tensor:
        return (image - 0.5) * c + (0.5 + b)

    def dali(self, image, c, b):
        from nvidia.dali import fn

        return fn.brightness_contrast(image, contrast_center=0.5, contrast=c, brightness_shift=b)


@dataclass(frozen=True)
class Normalize(Transform2D):
    """(x - mean) / std, per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def torch(self, image: torch.Tensor) -> torch.Tensor:
        mean, std = (
            torch.tensor(v, device=image.device).view(-1, 1, 1) for v in (self.mean, self.std)
        )
        return (image - mean) / std

    def dali(self, image):
        from nvidia.dali import fn

        mean, std = (np.asarray(v, np.float32).reshape(1, 1, -1) for v in (self.mean, self.std))
        return fn.normalize(image, mean=mean, stddev=std)


def normalization(
    config: Augment2D, stats: tuple[list[float], list[float]] | None, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Per-channel (mean, std) in unit scale that `config.normalize` asks for, if any."""
    if config.normalize == "imagenet":
        mean, std = (v[:channels] for v in IMAGENET)
    elif config.normalize == "card" and stats is not None:
        mean, std = stats[0][:channels], [max(s, 1e-8) for s in stats[1][:channels]]
    else:
        return None
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def chain_2d(
    config: Augment2D,
    size: tuple[int, int] | None,
    channels: int,
    stats: tuple[list[float], list[float]] | None,
) -> list[Transform2D]:
    """The transforms `config` asks for, in order, for images of `size` (H, W; None when
    it varies, which a resize or crop then fixes) and `channels` entering the chain."""
    chain: list[Transform2D] = []
    if config.resize:
        size = tuple(config.resize)
        chain.append(Resize(size))
    if config.random_crop:
        size = tuple(config.random_crop)
        chain.append(Crop(size))
    if config.flip_h or config.flip_v:
        chain.append(Flip(config.flip_h, config.flip_v))
    if config.rot90:
        chain.append(QuarterTurns(square=size is not None and size[0] == size[1]))
    if config.contrast or config.brightness:
        chain.append(Jitter(config.contrast, config.brightness))
    norm = normalization(config, stats, channels)
    if norm is not None:
        chain.append(Normalize(*norm))
    return chain
