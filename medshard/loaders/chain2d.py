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

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from medshard.loaders.draws import Choice, Coin, Draw, Stream, Uniform, draw_all
from medshard.loaders.resample import resize, resize_nearest, resize_taps

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
    "chain_2d",
    "chain_params",
    "crop_anchor",
    "fold_intensity",
    "normalization",
    "resize_taps",
]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The geometric steps also take numpy arrays (the torch backend's image loader moves
# views, copied once into the batch); the intensity steps take tensors.
Array = torch.Tensor | np.ndarray


class Transform2D:
    """One step of the chain: `draws` (how training draws each parameter), `fixed` (every
    parameter's value in evaluation), and the operation as `torch` and as `dali`;
    geometric steps also as `label` (a mask, nearest), intensity steps as `affine`."""

    geometric: ClassVar[bool] = True

    def draws(self) -> dict[str, Draw]:
        return {}

    def fixed(self) -> dict[str, Any]:
        return {}

    def params(self, generator: torch.Generator | None) -> dict[str, Any]:
        """Drawn from `generator` in its declared order; None: the evaluation values."""
        return chain_params([self], generator)[0]

    def dali_params(self, training: bool) -> dict[str, Any]:
        drawn = {n: d.dali() for n, d in self.draws().items()} if training else {}
        return self.fixed() | drawn

    def torch(self, image: torch.Tensor, **params) -> torch.Tensor:
        raise NotImplementedError

    def label(self, mask: torch.Tensor, **params) -> torch.Tensor:
        """The same geometric step on a label map (..., H, W)."""
        return self.torch(mask, **params)

    def dali(self, image, **params):
        raise NotImplementedError

    def dali_label(self, mask, **params):
        return self.dali(mask, **params)

    def affine(self, channels: int, **params) -> tuple[np.ndarray | float, np.ndarray | float]:
        """An intensity step as (gain, offset), each one number or one per channel:
        x -> gain * x + offset."""
        raise NotImplementedError


# numpy's views of flips and turns (np.flip and np.rot90 make the same views, in
# several times the microseconds a sample's whole copy takes)
_NUMPY_FLIPS = {-1: lambda a: a[..., ::-1], -2: lambda a: a[..., ::-1, :]}
_NUMPY_TURNS = (
    lambda a: a,
    lambda a: a.swapaxes(-2, -1)[..., ::-1, :],
    lambda a: a[..., ::-1, ::-1],
    lambda a: a.swapaxes(-2, -1)[..., ::-1],
)


def _flip(image: Array, dims: list[int]) -> Array:
    """`image` mirrored along `dims`: a numpy view, or a torch copy (uint16, which
    torch's flips do not take, moved as the int16 of the same bits)."""
    if isinstance(image, np.ndarray):
        return image[..., ::-1, :][..., ::-1] if len(dims) == 2 else _NUMPY_FLIPS[dims[0]](image)
    if image.dtype == torch.uint16:
        return image.view(torch.int16).flip(dims).view(torch.uint16)
    return image.flip(dims)


def _turn(image: Array, turns: int) -> Array:
    """`image` turned by `turns` quarter turns counter-clockwise: a numpy view, or a
    torch copy (uint16 as int16, as in `_flip`)."""
    if isinstance(image, np.ndarray):
        return _NUMPY_TURNS[turns % 4](image)
    if image.dtype == torch.uint16:
        return torch.rot90(image.view(torch.int16), turns, dims=(-2, -1)).view(torch.uint16)
    return torch.rot90(image, turns, dims=(-2, -1))


@dataclass(frozen=True)
class Resize(Transform2D):
    """Resample to `size` (H, W) with a linear filter, widened to the scale when shrinking
    (antialiasing), edge pixels repeated beyond the border: DALI's antialiased linear
    resize (loaders/resample.py). Integer images stay integers, rounded, as in DALI."""

    size: tuple[int, int]

    def torch(self, image: torch.Tensor) -> torch.Tensor:
        return resize(image, self.size)

    def label(self, mask: torch.Tensor) -> torch.Tensor:
        return resize_nearest(mask, self.size)

    def dali(self, image):
        from nvidia.dali import fn

        return fn.resize(image, resize_y=self.size[0], resize_x=self.size[1], antialias=True)

    def dali_label(self, mask):
        from nvidia.dali import fn, types

        return fn.resize(
            mask, resize_y=self.size[0], resize_x=self.size[1], interp_type=types.INTERP_NN
        )


def crop_anchor(fraction: float, slack: float) -> int:
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
class RandomResizedCrop(Transform2D):
    """Cut out a box of `area` times the image's area and aspect ratio (width / height)
    exp(`logratio`), each side rounded and at most the image's, at (`y`, `x`) as `Crop`
    places it; then resample only that box to `size` (FFCV's order: the crop first).
    Training draws the area from `scale`, the log ratio uniformly between the logs of
    `ratio`, and the place uniformly; evaluation takes the whole image (area 1, the
    image's own ratio). The box is computed in float32, as DALI computes it."""

    size: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def draws(self) -> dict[str, Draw]:
        return {
            "area": Uniform(*self.scale),
            "logratio": Uniform(math.log(self.ratio[0]), math.log(self.ratio[1])),
            "y": Uniform(0.0, 1.0),
            "x": Uniform(0.0, 1.0),
        }

    def fixed(self) -> dict[str, Any]:
        return {"area": 1.0, "logratio": None, "y": 0.5, "x": 0.5}

    @staticmethod
    def box(
        height: int, width: int, area: float, logratio: float | None, y: float, x: float
    ) -> tuple[int, int, int, int]:
        """(top, left, box height, box width) of the crop in an image of that size."""
        f32 = np.float32
        h, w = f32(height), f32(width)
        ratio = w / h if logratio is None else np.exp(f32(logratio))
        pixels = f32(area) * h * w
        box_w = min(max(float(np.floor(np.sqrt(pixels * ratio) + f32(0.5))), 1.0), width)
        box_h = min(max(float(np.floor(np.sqrt(pixels / ratio) + f32(0.5))), 1.0), height)
        return crop_anchor(y, height - box_h), crop_anchor(x, width - box_w), int(box_h), int(box_w)

    def _cut(self, image: torch.Tensor, **params) -> torch.Tensor:
        top, left, h, w = self.box(*image.shape[-2:], **params)
        return image[..., top : top + h, left : left + w]

    def torch(self, image: torch.Tensor, **params) -> torch.Tensor:
        return resize(self._cut(image, **params), self.size)

    def label(self, mask: torch.Tensor, **params) -> torch.Tensor:
        return resize_nearest(self._cut(mask, **params), self.size)

    def _dali_cut(self, image, area, logratio, y, x):
        from nvidia.dali import fn, types
        from nvidia.dali import math as dmath

        shape = fn.cast(image.shape(), dtype=types.FLOAT)  # HWC
        height, width = shape[0], shape[1]
        if logratio is None:
            ratio = width / height
        elif isinstance(logratio, int | float):
            ratio = float(np.exp(np.float32(logratio)))
        else:
            ratio = dmath.exp(logratio)
        pixels = area * height * width
        box_w = dmath.clamp(dmath.floor(dmath.sqrt(pixels * ratio) + 0.5), 1.0, width)
        box_h = dmath.clamp(dmath.floor(dmath.sqrt(pixels / ratio) + 0.5), 1.0, height)
        return fn.crop(image, crop_h=box_h, crop_w=box_w, crop_pos_y=y, crop_pos_x=x)

    def dali(self, image, **params):
        from nvidia.dali import fn

        cut = self._dali_cut(image, **params)
        return fn.resize(cut, resize_y=self.size[0], resize_x=self.size[1], antialias=True)

    def dali_label(self, mask, **params):
        from nvidia.dali import fn, types

        cut = self._dali_cut(mask, **params)
        return fn.resize(
            cut, resize_y=self.size[0], resize_x=self.size[1], interp_type=types.INTERP_NN
        )


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
        return _flip(image, dims) if dims else image

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
        if not turns:
            return image
        return _turn(image, turns)

    def dali(self, image, k):
        from nvidia.dali import fn, types

        angle = self.turns(k) * 90.0  # exact with nearest-neighbour sampling
        return fn.rotate(image, angle=angle, keep_size=True, interp_type=types.INTERP_NN)


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
    chain: list[Transform2D], generator: torch.Generator | Stream | None
) -> list[dict]:
    """Each transform's parameters: drawn from `generator` (a torch generator, or a
    sample's `Stream`) in chain order, in one call to it; None: the evaluation values."""
    if generator is None:
        return [t.fixed() for t in chain]
    fixed, names, draws = _draw_plan(tuple(chain))
    values = iter(draw_all(draws, generator))
    return [f | {name: next(values) for name in n} for f, n in zip(fixed, names)]


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
