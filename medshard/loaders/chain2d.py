"""The 2D augmentation chain, defined once for both backends. Each transform names its
parameters, says how training draws each one (a distribution sampled from the sample's
seeded torch generator, or by the DALI random operator of the same distribution) and
which value evaluation uses, and does the same thing as a torch operation and as DALI
operators. `chain_2d` puts them in one order: resize, crop or random resized crop, flip,
quarter turns, contrast and brightness, normalisation.

The geometric steps move stored values (integers stay integers; a resize rounds, as
DALI's does), so they cost a copy of the stored type. The intensity steps are each an
affine map per channel: the torch backend folds them, and the bit depth's scale, into
one multiply-add per sample and channel, run once on the whole batch, where the values
first become floats (`fold_intensity`).

Tensors are (..., C, H, W) in torch (a clip's frames share one draw; the geometric
steps also move numpy arrays, as views where they can) and HWC in DALI."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from medshard.loaders.draws import Draw, Uniform, draw_columns
from medshard.loaders.geometry2d import (
    Crop,
    Flip,
    QuarterTurns,
    RandomResizedCrop,
    Resize,
    crop_anchor,
)
from medshard.loaders.resample import resize_taps
from medshard.loaders.transform2d import Transform2D

if TYPE_CHECKING:
    from medshard.loaders.augment import Augment2D

__all__ = [
    "Crop",
    "Flip",
    "Jitter",
    "Normalize",
    "QuarterTurns",
    "RandomResizedCrop",
    "Resize",
    "Transform2D",
    "batch_intensity",
    "chain_2d",
    "chain_columns",
    "chain_params",
    "chain_rows",
    "draw_count",
    "crop_anchor",
    "fold_intensity",
    "normalization",
    "resize_taps",
]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Jitter(Transform2D):
    """Contrast around 0.5, then a brightness shift: x -> (x - 0.5) * c + 0.5 + b. Training
    draws c from [1 - contrast, 1 + contrast) and b from [-brightness, brightness); a
    strength of 0 leaves its parameter at 1 (c) or 0 (b), as in evaluation."""

    geometric: ClassVar[bool] = False
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

    def affine(self, channels: int, c: float, b: float) -> tuple[float, float]:
        return c, 0.5 - 0.5 * c + b

    def dali(self, image, c, b):
        from nvidia.dali import fn

        return fn.brightness_contrast(image, contrast_center=0.5, contrast=c, brightness_shift=b)


@dataclass(frozen=True)
class Normalize(Transform2D):
    """(x - mean) / std, per channel."""

    geometric: ClassVar[bool] = False
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def torch(self, image: torch.Tensor) -> torch.Tensor:
        mean, std = (
            torch.tensor(v, device=image.device).view(-1, 1, 1) for v in (self.mean, self.std)
        )
        return (image - mean) / std

    def affine(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        return _normalize_affine(self.mean, self.std)

    def dali(self, image):
        from nvidia.dali import fn

        mean, std = (np.asarray(v, np.float32).reshape(1, 1, -1) for v in (self.mean, self.std))
        return fn.normalize(image, mean=mean, stddev=std)


def chain_params(
    chain: list[Transform2D], source: torch.Generator | np.ndarray | None
) -> list[dict]:
    """Each transform's parameters for one sample: drawn in chain order from `source` (a
    torch generator, or the sample's row of draws.sample_units); None: the evaluation
    values."""
    if source is None:
        return [t.fixed() for t in chain]
    if isinstance(source, torch.Generator):
        source = torch.rand(draw_count(chain), generator=source, dtype=torch.float64).numpy()
    return chain_rows(chain_columns(chain, source[None]), 1)[0]


def draw_count(chain: list[Transform2D]) -> int:
    """How many numbers a sample draws for the chain in training."""
    return len(_draw_plan(tuple(chain))[2])


def chain_columns(chain: list[Transform2D], units: np.ndarray | None) -> list[dict]:
    """Each transform's parameters for a batch at once: for each drawn one a column (a
    value per sample) from `units` (a row per sample, the chain's draws in order), for
    the rest the evaluation value; None: the evaluation values alone."""
    fixed, names, draws = _draw_plan(tuple(chain))
    if units is None:
        return [dict(f) for f in fixed]  # the cached plan's own dicts stay unchanged
    columns = iter(draw_columns(draws, units))
    return [f | {name: next(columns) for name in n} for f, n in zip(fixed, names)]


def chain_rows(columns: list[dict], count: int) -> list[list[dict]]:
    """`chain_columns` as each of `count` samples' parameters, per transform (Python
    numbers, which the geometric steps take fastest)."""
    per_transform = []
    for params in columns:
        values = [v.tolist() if isinstance(v, np.ndarray) else [v] * count for v in params.values()]
        rows = [dict(zip(params, row)) for row in zip(*values)] if params else [{}] * count
        per_transform.append(rows)
    return [[rows[i] for rows in per_transform] for i in range(count)]


def batch_intensity(
    chain: list[Transform2D], columns: list[dict], channels: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The chain's intensity steps for `count` samples as (gain, offset), each (count,
    channels), from their `chain_columns`: `fold_intensity` on every sample at
    once (before the bit depth's scale, which divides the gain)."""
    per_sample = [
        {n: v[:, None] if isinstance(v, np.ndarray) else v for n, v in params.items()}
        for params in columns
    ]
    gain, offset = fold_intensity(chain, per_sample, channels, 1.0)
    return tuple(np.broadcast_to(v, (count, channels)) for v in (gain, offset))


@lru_cache(maxsize=64)
def _draw_plan(chain: tuple[Transform2D, ...]) -> tuple[list[dict], list[tuple], list[Draw]]:
    """Each transform's evaluation values and the names it draws, and every draw in
    chain order: the same for every sample, so made once."""
    each = [t.draws() for t in chain]
    return (
        [t.fixed() for t in chain],
        [tuple(d) for d in each],
        [x for d in each for x in d.values()],
    )


@lru_cache(maxsize=64)
def _normalize_affine(mean: tuple, std: tuple) -> tuple[np.ndarray, np.ndarray]:
    inverse = 1 / np.asarray(std, np.float64)
    return inverse, -np.asarray(mean, np.float64) * inverse


def fold_intensity(
    chain: list[Transform2D], params: list[dict], channels: int, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """The chain's intensity steps after dividing stored values by `scale`, as (gain,
    offset): each one number for every channel, or one per channel (float64); what the
    torch backend applies to a batch."""
    gain, offset = 1.0 / scale, 0.0
    for transform, values in zip(chain, params):
        if not transform.geometric:
            g, o = transform.affine(channels, **values)
            gain, offset = g * gain, g * offset + o
    return gain, offset


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
    if config.random_resized_crop:
        size = tuple(config.random_resized_crop)
        chain.append(RandomResizedCrop(size, tuple(config.rrc_scale), tuple(config.rrc_ratio)))
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
