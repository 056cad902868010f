"""The geometric steps of the 2D chain (chain2d.py): resize, crop, random resized crop,
flips and quarter turns. They move stored values (integers stay integers; a resize
rounds, as DALI's does), on numpy arrays as views where they can."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medshard.loaders.draws import Choice, Coin, Draw, Uniform
from medshard.loaders.resample import resize, resize_nearest
from medshard.loaders.transform2d import Array, Transform2D

__all__ = ["Crop", "Flip", "QuarterTurns", "RandomResizedCrop", "Resize", "crop_anchor"]


# numpy's view of each quarter turn (np.rot90 makes the same views, in several times the
# microseconds a sample's whole copy takes)
_NUMPY_TURNS = (
    lambda a: a,
    lambda a: a.swapaxes(-2, -1)[..., ::-1, :],
    lambda a: a[..., ::-1, ::-1],
    lambda a: a.swapaxes(-2, -1)[..., ::-1],
)


def _flip(image: Array, dims: list[int]) -> Array:
    """`image` mirrored along `dims`: a numpy view, or a torch copy (uint16, which
    torch's flips do not take, moved as the int16 of the same bits)."""
    if isinstance(image, np.ndarray):  # views, as np.flip makes, without its overhead
        image = image[..., ::-1] if -1 in dims else image
        return image[..., ::-1, :] if -2 in dims else image
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
