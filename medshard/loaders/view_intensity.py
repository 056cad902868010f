"""The intensity steps of BYOL's two views, on the [0, 1] scale and on one channel as on
three: their settings (`ViewPipeline`), each view's draws from its own generator, and the
steps themselves on a whole batch of views at once (jitter, Gaussian blur, solarisation,
normalisation), wherever the batch is."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medshard.loaders.seeds import derive_seed

__all__ = [
    "ViewPipeline",
    "draw_view",
    "gaussian_blur",
    "view_generator",
    "view_intensity",
]

Pair = tuple[float, float]


class ViewPipeline(BaseModel):
    """The intensity steps of the two views, on the [0, 1] scale: with probability
    `jitter_prob`, contrast c in [1 - contrast, 1 + contrast) around 0.5 and a brightness
    shift in [-brightness, brightness), clipped to [0, 1]; then a Gaussian blur of sigma
    in `blur_sigma` (pixels) and solarisation (values from 0.5 up turned to 1 - x), with
    each view's own probability (the first and the second view of BYOL: always blurred,
    never solarised; rarely blurred, sometimes solarised)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jitter_prob: float = Field(0.8, ge=0.0, le=1.0)
    brightness: float = Field(0.2, ge=0.0)
    contrast: float = Field(0.4, ge=0.0, le=1.0)
    blur_prob: Pair = (1.0, 0.1)
    blur_sigma: Pair = (0.1, 2.0)
    solarize_prob: Pair = (0.0, 0.2)

    @model_validator(mode="after")
    def _sensible(self) -> ViewPipeline:
        for name in ("blur_prob", "solarize_prob"):
            if not all(0.0 <= p <= 1.0 for p in getattr(self, name)):
                raise ValueError(f"{name} holds a probability per view, each in [0, 1]")
        low, high = self.blur_sigma
        if not 0.0 < low <= high:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, not {self.blur_sigma}")
        return self

    @property
    def blur_radius(self) -> int:
        """Taps on each side of a blur kernel: three of the largest sigma."""
        return math.ceil(3 * self.blur_sigma[1])


def view_generator(seed: int, epoch: int, index: int, view: int) -> torch.Generator:
    """The generator that only this view of this (seed, epoch, sample) draws from."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, index, view))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _coin(generator: torch.Generator, probability: float) -> bool:
    return float(torch.rand((), generator=generator)) < probability


def draw_view(pipeline: ViewPipeline, view: int, generator: torch.Generator) -> list[float]:
    """One view's intensity parameters: [contrast, brightness, blur sigma (0: none),
    solarise (0 or 1)]. Every draw is made whatever the coins say, so that each view
    uses the same places of its generator."""
    jitter = _coin(generator, pipeline.jitter_prob)
    contrast = _uniform(generator, 1 - pipeline.contrast, 1 + pipeline.contrast)
    brightness = _uniform(generator, -pipeline.brightness, pipeline.brightness)
    blur = _coin(generator, pipeline.blur_prob[view])
    sigma = _uniform(generator, *pipeline.blur_sigma)
    solarize = _coin(generator, pipeline.solarize_prob[view])
    return [
        contrast if jitter else 1.0,
        brightness if jitter else 0.0,
        sigma if blur else 0.0,
        float(solarize),
    ]


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, C, H, W) each blurred by its own `sigma` (B,), 0 leaving it as it is: one
    separable grouped convolution over the whole batch, edges repeated. (Written here:
    torch has no Gaussian blur with a sigma per image.)"""
    count, channels, height, width = images.shape
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    spread = sigma.to(images).clamp_min(1e-6)[:, None]
    kernel = torch.exp(-0.5 * (taps / spread) ** 2)
    kernel = (kernel / kernel.sum(-1, keepdim=True)).repeat_interleave(channels, 0)
    flat = images.reshape(1, count * channels, height, width)
    groups = count * channels
    flat = F.conv2d(
        F.pad(flat, (radius, radius, 0, 0), mode="replicate"),
        kernel[:, None, None, :],
        groups=groups,
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, radius, radius), mode="replicate"),
        kernel[:, None, :, None],
        groups=groups,
    )
    return flat.reshape(count, channels, height, width)


def view_intensity(
    views: torch.Tensor,
    params: torch.Tensor,
    radius: int,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None,
) -> torch.Tensor:
    """Views (..., C, H, W) on the [0, 1] scale with their `params` (..., 4) from
    `draw_view`: jitter, blur, solarise, then normalise by `norm` (mean, std)."""
    shape = views.shape
    x = views.reshape(-1, *shape[-3:]).float()
    p = params.reshape(-1, 4).to(x)
    contrast, brightness = p[:, 0, None, None, None], p[:, 1, None, None, None]
    x = ((x - 0.5) * contrast + 0.5 + brightness).clamp_(0.0, 1.0)
    if bool((p[:, 2] > 0).any()):
        x = gaussian_blur(x, p[:, 2], radius)
    x = torch.where((p[:, 3, None, None, None] > 0) & (x >= 0.5), 1.0 - x, x)
    if norm is not None:
        mean, std = (torch.tensor(v, device=x.device).view(-1, 1, 1) for v in norm)
        x = (x - mean) / std
    return x.reshape(shape)
