"""3D augmentation, defined once. A sample's parameters are drawn from its own seeded
generator (`draw_3d`, torchio's RandomFlip -> Flip split), then applied as deterministic
operations, each only where it was drawn (nnU-Net's per-transform probabilities):

- flips and quarter turns are views: the batch reader copies the patch through them
  (`write_view`), and torch tensors take them as one copy (`orient`);
- rotation, scaling and anisotropic zoom are one affine, resampled by one `grid_sample`
  for image and mask together (mask nearest);
- gamma, contrast, the stored intensity scale, normalisation and noise are one per-channel
  plan (`intensity_plan`) run in one pass each on numpy arrays (CPU reads, one thread
  each) or on torch tensors (the device)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Augment3D",
    "Draw3D",
    "IntensityPlan",
    "augment_3d",
    "draw_3d",
    "intensity_plan",
    "orient",
    "resample",
    "run_plan",
    "write_view",
]

Probability = Field(1.0, ge=0.0, le=1.0)


class Augment3D(BaseModel):
    """3D volumes (c, z, y, x) with their masks. Each random transform applies with its
    probability `*_p` (1: always)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flip_axes: tuple[int, ...] = ()  # spatial axes 0 (z), 1 (y), 2 (x), each flipped at p=0.5
    rot90_xy: bool = False  # quarter turns where y and x sizes match, half turns otherwise
    rotate: float = 0.0  # degrees: each axis turned by an angle drawn in [-rotate, rotate]
    rotate_p: float = Probability
    scale: tuple[float, float] | None = None  # isotropic scaling factor range (> 1: larger)
    scale_p: float = Probability
    zoom: tuple[float, float] | None = None  # anisotropic: a factor per axis from this range
    zoom_p: float = Probability
    gamma: tuple[float, float] | None = None  # on intensities rescaled to [0, 1]
    gamma_p: float = Probability
    contrast: tuple[float, float] | None = None
    contrast_p: float = Probability
    noise_std: float = 0.0  # Gaussian noise, after normalisation
    noise_p: float = Probability
    normalize: Literal["card", "zscore", "none"] = "card"


@dataclass(frozen=True)
class Draw3D:
    """One sample's drawn parameters (the identity in evaluation)."""

    flips: tuple[int, ...] = ()  # spatial axes
    turns: int = 0  # quarter turns in the (y, x) plane
    affine: tuple[tuple[float, ...], ...] | None = None  # output -> input offsets, (z, y, x)
    gamma: float | None = None
    contrast: float | None = None
    noise_seed: int | None = None


# Where each parameter takes its uniform draw in a sample's vector of draws: fixed places,
# so that turning one transform on or off leaves the others' draws as they were.
_DRAWS = dict(flip=0, turns=3, rotate_p=4, angles=5, scale_p=8, scale=9, zoom_p=10, zoom=11)
_DRAWS |= dict(gamma_p=14, gamma=15, contrast_p=16, contrast=17, noise_p=18, noise=19)


def draw_3d(config: Augment3D, generator: torch.Generator | None, shape: tuple[int, ...]) -> Draw3D:
    """The parameters of one sample of spatial `shape` (z, y, x), from one vector of
    uniform draws (one generator call per sample, not one per parameter)."""
    if generator is None:
        return Draw3D()
    u = torch.rand(20, generator=generator, dtype=torch.float64).tolist()

    def happens(name: str, probability: float) -> bool:
        return u[_DRAWS[name]] < probability

    def uniform(name: str, low: float, high: float, offset: int = 0) -> float:
        return low + (high - low) * u[_DRAWS[name] + offset]

    flips = tuple(axis for axis in config.flip_axes if u[_DRAWS["flip"] + axis] < 0.5)
    turns = int(u[_DRAWS["turns"]] * 4) if config.rot90_xy else 0
    if shape[-2] != shape[-1]:
        turns = 2 * (turns % 2)  # quarter turns only where y and x are the same size
    factors, angles = np.ones(3), np.zeros(3)
    if config.rotate and happens("rotate_p", config.rotate_p):
        r = config.rotate
        angles = np.radians([uniform("angles", -r, r, axis) for axis in range(3)])
    if config.scale and happens("scale_p", config.scale_p):
        factors *= uniform("scale", *config.scale)
    if config.zoom and happens("zoom_p", config.zoom_p):
        factors *= [uniform("zoom", *config.zoom, axis) for axis in range(3)]
    affine = None
    if angles.any() or (factors != 1).any():
        affine = tuple(map(tuple, _rotation(angles) @ np.diag(1 / factors)))
    gamma = contrast = noise = None
    if config.gamma and happens("gamma_p", config.gamma_p):
        gamma = uniform("gamma", *config.gamma)
    if config.contrast and happens("contrast_p", config.contrast_p):
        contrast = uniform("contrast", *config.contrast)
    if config.noise_std and happens("noise_p", config.noise_p):
        noise = int(u[_DRAWS["noise"]] * 2**53)
    return Draw3D(flips, turns, affine, gamma, contrast, noise)


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation about the z, then y, then x axis, in (z, y, x) coordinates."""
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        turn = np.eye(3)
        turn[a, a] = turn[b, b] = math.cos(angle)
        turn[a, b], turn[b, a] = -math.sin(angle), math.sin(angle)
        matrix = turn @ matrix
    return matrix


def orient(array, draw: Draw3D):
    """`array` (..., z, y, x) flipped and turned as drawn: a numpy view, or a torch copy."""
    axes = [axis - 3 for axis in draw.flips]
    if isinstance(array, np.ndarray):
        return (
            np.rot90(np.flip(array, axes), draw.turns, axes=(-2, -1))
            if axes
            else (np.rot90(array, draw.turns, axes=(-2, -1)))
        )
    if axes:
        array = torch.flip(array, axes)
    return torch.rot90(array, draw.turns, dims=(-2, -1)) if draw.turns else array


def write_view(slot: np.ndarray, draw: Draw3D) -> np.ndarray:
    """The view of `slot` that a patch is written through so that `slot` holds
    orient(patch): turned back, then flipped (each its own inverse)."""
    view = np.rot90(slot, -draw.turns, axes=(-2, -1))
    return np.flip(view, [axis - 3 for axis in draw.flips]) if draw.flips else view


def resample(image: torch.Tensor, mask: torch.Tensor | None, draw: Draw3D):
    """(c, z, y, x) image (float) and (z, y, x) mask through the drawn affine about the
    patch centre: one grid for both, linear for the image, nearest for the mask, mirrored
    at the patch's edge."""
    if draw.affine is None:
        return image, mask
    import torch.nn.functional as F

    matrix = torch.tensor(draw.affine, dtype=torch.float32, device=image.device)
    half = (torch.tensor(image.shape[-3:], dtype=torch.float32, device=image.device) - 1) / 2
    # normalised (x, y, z) output coordinates -> normalised input coordinates
    zyx = matrix * half[None, :] / half[:, None].clamp_min(0.5)
    theta = torch.zeros(1, 3, 4, device=image.device)
    theta[0, :, :3] = zyx.flip(0).flip(1)
    grid = F.affine_grid(theta, [1, 1, *image.shape[-3:]], align_corners=True)
    options = dict(padding_mode="reflection", align_corners=True)
    image = F.grid_sample(image[None], grid, mode="bilinear", **options)[0]
    if mask is not None:
        moved = F.grid_sample(mask[None, None].float(), grid, mode="nearest", **options)
        mask = moved[0, 0].to(mask.dtype)
    return image, mask


@dataclass(frozen=True)
class IntensityPlan:
    """What the intensity pass does to one sample: the drawn gamma, contrast and noise,
    the normalisation with the card's statistics, and each channel's stored scale
    (value = stored * scale + offset, 1 and 0 unless stored as scaled integers)."""

    draw: Draw3D
    normalize: str
    stats: dict | None
    noise_std: float
    storage: tuple[tuple[float, float], ...]


def intensity_plan(
    config: Augment3D, draw: Draw3D, stats: dict | None, storage=None, channels: int = 1
) -> IntensityPlan:
    storage = tuple(storage) if storage is not None else ((1.0, 0.0),) * channels
    return IntensityPlan(draw, config.normalize, stats, config.noise_std, storage)


def _minmax(v) -> tuple[float, float]:
    if isinstance(v, np.ndarray):
        return float(v.min()), float(v.max())
    low, high = torch.aminmax(v)
    return float(low), float(high)


def _affine_(v, scale: float, shift: float) -> None:
    if isinstance(v, np.ndarray):
        np.multiply(v, scale, out=v)
        np.add(v, shift, out=v)
    else:
        v.mul_(scale).add_(shift)


def _shift_(v, low: float) -> None:
    """v - low: exactly 0 at the minimum (gamma takes no negative base)."""
    if isinstance(v, np.ndarray):
        np.subtract(v, low, out=v)
    else:
        v.sub_(low)


def _clip_(v, low: float, high: float) -> None:
    if isinstance(v, np.ndarray):
        np.clip(v, low, high, out=v)
    else:
        v.clamp_(low, high)


def _gamma_(v, gamma: float) -> None:
    if isinstance(v, np.ndarray):  # exp(g log v): numpy's vectorised exp and log beat power
        with np.errstate(divide="ignore"):
            np.log(v, out=v)
        np.multiply(v, gamma, out=v)
        np.exp(v, out=v)
    else:
        v.pow_(gamma)


def _mean_std(v) -> tuple[float, float]:
    if isinstance(v, np.ndarray):
        return float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64, ddof=1))  # as torch
    return float(v.double().mean()), float(v.double().std())


def run_plan(x, plan: IntensityPlan):
    """Run `plan` in place on one (c, z, y, x) float32 sample, numpy or torch; per
    channel, value = a * v + b is tracked instead of computed until the last pass."""
    draw = plan.draw
    for channel in range(x.shape[0]):
        v = x[channel]
        a, b = plan.storage[channel]
        if draw.gamma is not None or draw.contrast is not None:
            # on the patch rescaled to [0, 1], u = (v - low) / span; v keeps u / unit
            low, high = _minmax(v)
            span = max(high - low, 1e-8)
            _shift_(v, low)
            unit = 1 / span
            if draw.gamma is not None:  # u^g = (v - low)^g * unit^g
                _gamma_(v, draw.gamma)
                unit **= draw.gamma
            if draw.contrast is not None:
                _affine_(v, draw.contrast * unit, 0.5 * (1 - draw.contrast))
                _clip_(v, 0.0, 1.0)
                unit = 1.0
            a, b = a * span * unit, a * low + b
        if plan.normalize == "card" and plan.stats is not None:
            stats = {k: float(plan.stats[k][channel]) for k in ("mean", "std", "p0_5", "p99_5")}
            if plan.stats.get("clipped_mean"):  # a card written before them: the plain moments
                stats["mean"] = float(plan.stats["clipped_mean"][channel])
                stats["std"] = float(plan.stats["clipped_std"][channel])
            _clip_(v, (stats["p0_5"] - b) / a, (stats["p99_5"] - b) / a)  # nnU-Net's CT scheme
            std = max(stats["std"], 1e-8)
            a, b = a / std, (b - stats["mean"]) / std
        elif plan.normalize == "zscore":
            mean, std = _mean_std(v)
            spread = max(a * std, 1e-8)
            a, b = a / spread, -a * mean / spread
        if (a, b) != (1.0, 0.0):
            _affine_(v, a, b)
    if draw.noise_seed is not None:
        generator = torch.Generator().manual_seed(draw.noise_seed)
        noise = torch.randn(tuple(x.shape), generator=generator)
        if isinstance(x, np.ndarray):
            values = noise.numpy()
            np.multiply(values, plan.noise_std, out=values)
            np.add(x, values, out=x)
        else:
            x.add_(noise.to(x.device), alpha=plan.noise_std)
    return x


def augment_3d(
    image: torch.Tensor,
    mask: torch.Tensor | None,
    config: Augment3D,
    generator: torch.Generator | None,
    stats: dict | None,
    storage=None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (c, z, y, x) volume and its (z, y, x) mask as torch tensors, with one spatial
    draw for both; `generator` None means evaluation. `stats`: the card's per-channel
    mean, std, p0_5 and p99_5; `storage`: each channel's stored (scale, offset)."""
    draw = draw_3d(config, generator, tuple(image.shape[-3:]))
    x = orient(image.float(), draw)  # float first: torch flips no unsigned 16-bit type
    if x is image:  # never write into the caller's tensor
        x = x.clone()
    if mask is not None:
        wide = mask.dtype in (torch.uint16, torch.uint32, torch.uint64)
        mask = orient(mask.to(torch.int64) if wide else mask, draw).to(mask.dtype)
    x, mask = resample(x, mask, draw)
    x = run_plan(x.contiguous(), intensity_plan(config, draw, stats, storage, x.shape[0]))
    return x, (None if mask is None else mask.contiguous())
