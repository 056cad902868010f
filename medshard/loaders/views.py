"""Two views of every image for self-supervision (BYOL): each sample is read and decoded
once, then augmented twice with independent draws. The geometric steps (crop or random
resized crop, flips, quarter turns) are the `augment:` chain of loaders/chain2d.py, run
per sample where the sample is read; the intensity steps (brightness and contrast
jitter, Gaussian blur, solarisation, each with its probability, then normalisation) run
on the whole batch of views where it lands: on the device when there is a GPU, batched
on a CPU. They work on one channel as on three, so 16-bit gray mammograms need no colour
step. Each view draws from its own generator, seeded by (seed, epoch, sample, view)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medshard.errors import DatasetError
from medshard.loaders.augment import Augment2D, augment_2d
from medshard.loaders.chain2d import normalization
from medshard.loaders.frame_format import bit_depth_scale, check_sizes, stats_for, unit_stats
from medshard.loaders.seeds import derive_seed
from medshard.loaders.sources import Selection, ShardSamples
from medshard.loaders.spec import LoaderOptions, LoaderSpecError
from medshard.loaders.torch_loader import LoaderIdentity, TorchLoader
from medshard.shards.reader import Dataset

__all__ = [
    "ViewIntensity",
    "ViewPipeline",
    "ViewTransform",
    "build_view_loader",
    "draw_view",
    "gaussian_blur",
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


def _tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # read-only arrays: augment_2d never writes its input
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


@dataclass(frozen=True)
class ViewTransform:
    """Per sample, where it is read: two views of its one decoded image through the
    geometric chain of `geometry` (each view its own draw), on the [0, 1] scale, and
    their intensity parameters. `image` becomes (2, C, H, W), `view_params` (2, 4)."""

    geometry: Augment2D
    pipeline: ViewPipeline
    seed: int
    channels: int

    def __call__(self, sample: dict, index: int, epoch: int) -> dict:
        image = sample["image"]
        source, scale = _tensor(image), bit_depth_scale(image.dtype)
        views, params = [], []
        for view in (0, 1):
            generator = view_generator(self.seed, epoch, index, view)
            views.append(augment_2d(source, self.geometry, generator, scale, None, self.channels))
            params.append(draw_view(self.pipeline, view, generator))
        sample["image"] = torch.stack(views)
        sample["view_params"] = torch.tensor(params, dtype=torch.float32)
        return sample


@dataclass(frozen=True)
class ViewIntensity:
    """Per batch, where it lands (the device, or the CPU): the intensity steps of every
    view at once; `image` becomes (N, 2, C, H, W) normalised floats."""

    radius: int
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None

    def __call__(self, batch: dict, epoch: int) -> dict:
        batch["image"] = view_intensity(
            batch["image"], batch.pop("view_params"), self.radius, self.norm
        )
        return batch


def _geometry(augment: Augment2D) -> Augment2D:
    """The geometric part of `augment`: its intensity steps are the views' own."""
    if augment.brightness or augment.contrast:
        raise LoaderSpecError(
            "two views draw their brightness and contrast jitter from the view pipeline "
            "(byol.views: jitter_prob, brightness, contrast); leave augment.brightness and "
            "augment.contrast at 0"
        )
    return augment.model_copy(update={"normalize": "none"})


def build_view_loader(
    ds: Dataset,
    split: str,
    options: LoaderOptions,
    *,
    augment: Augment2D,
    pipeline: ViewPipeline,
    channels: int,
    seed: int,
    rank: int,
    world_size: int,
    device: torch.device,
    fold: int | None = None,
    training: bool = True,
    uneven: str = "pad",
) -> TorchLoader:
    """Batches of `split` whose `image` is (N, 2, C, H, W): two views of each sample, with
    `key` and the sample's labels. `training` shuffles and moves the draws with the epoch;
    otherwise the order and the views stay the same from pass to pass."""
    if ds.card.kind != "images":
        raise DatasetError(
            f"{ds.path}: two views are made of 2D images, and this dataset holds {ds.card.kind}"
        )
    geometry = _geometry(augment)
    if fold is None:
        ds.require_split(split)
    source = ShardSamples(ds, Selection(split, fold))
    if not len(source):
        raise DatasetError(f"{ds.path}: split {split!r} has no samples in shards")
    check_sizes(ds, source.rows, split, augment)
    norm = normalization(augment, stats_for(unit_stats(ds), channels), channels)
    return TorchLoader(
        source,
        batch_size=options.batch_size,
        seed=seed,
        shuffle=training,
        uneven=uneven,
        drop_last=options.drop_last if training else False,
        rank=rank,
        world_size=world_size,
        num_workers=options.num_workers,
        device=torch.device(device),
        worker_transform=ViewTransform(geometry, pipeline, seed, channels),
        device_transform=ViewIntensity(pipeline.blur_radius, norm),
        identity=LoaderIdentity(str(ds.path), ds.card.fingerprint, split, fold),
        on_error=options.on_error,
    )
