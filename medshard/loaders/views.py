"""Two views of every image for self-supervision (BYOL): each sample is read and decoded
once, then augmented twice with independent draws, each view from its own generator
seeded by (seed, epoch, sample, view). The geometric steps (crop, flips, quarter turns)
are the `augment:` chain of loaders/chain2d.py; the intensity steps (jitter, blur,
solarisation, normalisation: loaders/view_intensity.py) run on the whole batch of views
where it lands. The pixels are the dataset's training copies unless the options ask for
the originals, as for every 2D loader. On a CPU the geometric steps run per sample where
it is read (the workers); on a GPU, for a split of one stored shape, the stored images
travel to the device and both views are cut there, with the same draws."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from medshard.errors import DatasetError
from medshard.loaders.augment import Augment2D, augment_2d
from medshard.loaders.chain2d import normalization
from medshard.loaders.copies import PixelSource, pixel_source
from medshard.loaders.frame_format import bit_depth_scale, check_sizes, stats_for, unit_stats
from medshard.loaders.sources import Selection, ShardSamples, label_fields
from medshard.loaders.spec import LoaderOptions, LoaderSpecError
from medshard.loaders.torch_loader import LoaderIdentity, TorchLoader
from medshard.loaders.view_intensity import (
    ViewPipeline,
    draw_view,
    gaussian_blur,
    view_generator,
    view_intensity,
)
from medshard.shards.reader import Dataset

__all__ = [
    "CopySamples",
    "DeviceViews",
    "KeepIndex",
    "ViewIntensity",
    "ViewPipeline",
    "ViewTransform",
    "build_view_loader",
    "draw_view",
    "gaussian_blur",
    "two_views",
    "view_generator",
    "view_intensity",
]


def _tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # read-only arrays: augment_2d never writes its input
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def two_views(
    image: torch.Tensor,
    geometry: Augment2D,
    pipeline: ViewPipeline,
    draw: tuple[int, int, int],
    scale: float,
    channels: int,
) -> tuple[torch.Tensor, list[list[float]]]:
    """Two views (2, C, H, W) of one image through the geometric chain, on the [0, 1]
    scale, and their intensity parameters; `draw` is (seed, epoch, sample index)."""
    views, params = [], []
    for view in (0, 1):
        generator = view_generator(*draw, view)
        views.append(augment_2d(image, geometry, generator, scale, None, channels))
        params.append(draw_view(pipeline, view, generator))
    return torch.stack(views), params


@dataclass(frozen=True)
class ViewTransform:
    """Per sample, where it is read: two views of its one decoded image (`two_views`).
    `image` becomes (2, C, H, W), `view_params` (2, 4)."""

    geometry: Augment2D
    pipeline: ViewPipeline
    seed: int
    channels: int

    def __call__(self, sample: dict, index: int, epoch: int) -> dict:
        image = sample["image"]
        scale = bit_depth_scale(image.dtype)
        draw = (self.seed, epoch, index)
        views, params = two_views(
            _tensor(image), self.geometry, self.pipeline, draw, scale, self.channels
        )
        sample["image"] = views
        sample["view_params"] = torch.tensor(params, dtype=torch.float32)
        return sample


@dataclass(frozen=True)
class KeepIndex:
    """Per sample, where it is read, when the views are made on the device: the decoded
    image as it is, with its index (the views' draws depend on it) and its bit depth's
    scale (images of one size may differ in type)."""

    def __call__(self, sample: dict, index: int, epoch: int) -> dict:
        sample["index"] = index
        sample["scale"] = np.float32(bit_depth_scale(sample["image"].dtype))
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


@dataclass(frozen=True)
class DeviceViews:
    """Per batch on the device, for images of one stored size and type: both views of
    each image (the same draws as ViewTransform's), then the intensity steps."""

    transform: ViewTransform
    intensity: ViewIntensity

    def __call__(self, batch: dict, epoch: int) -> dict:
        t, pairs, params = self.transform, [], []
        scales = batch.pop("scale").tolist()
        for image, index, scale in zip(batch["image"], batch.pop("index").tolist(), scales):
            draw = (t.seed, epoch, int(index))
            views, drawn = two_views(image.float(), t.geometry, t.pipeline, draw, scale, t.channels)
            pairs.append(views)
            params.append(drawn)
        batch["image"] = torch.stack(pairs)
        batch["view_params"] = torch.tensor(params, device=batch["image"].device)
        return self.intensity(batch, epoch)


class CopySamples:
    """The samples of a split with the pixels a 2D loader reads: the dataset's training
    copies (decoded and resized once at ingest) unless `pixels` says the originals."""

    def __init__(self, samples: ShardSamples, pixels: PixelSource):
        self.samples, self.pixels, self.rows = samples, pixels, samples.rows

    def __len__(self) -> int:
        return len(self.samples)

    def key(self, index: int) -> str:
        return self.samples.key(index)

    def shards(self) -> np.ndarray:
        return self.samples.shards()

    def read_by_windows(self, shards: int) -> None:
        self.samples.read_by_windows(shards)

    def load(self, index: int, epoch: int) -> dict:
        row = self.rows[index]
        raw = self.samples.raw(index)
        try:
            image = np.array(self.pixels.pixels(raw))  # a writable copy of a raw copy's view
        except Exception as exc:  # a missing member, or a codec's own error for bad bytes
            raise DatasetError(
                f"{row['shard']}: sample {row['key']!r} gives no image ({exc})"
            ) from exc
        return {"key": row["key"], **label_fields(row), "image": image}


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
    on_device: bool | None = None,
) -> TorchLoader:
    """Batches of `split` whose `image` is (N, 2, C, H, W): two views of each sample, with
    `key` and the sample's labels. `training` shuffles and moves the draws with the epoch;
    otherwise the order and the views stay the same from pass to pass. `on_device` makes
    both views of the batch where it lands rather than where each sample is read (default:
    on a GPU, when the split's images share one stored size and type)."""
    if ds.card.kind != "images":
        raise DatasetError(
            f"{ds.location}: two views are made of 2D images, and this dataset holds {ds.card.kind}"
        )
    geometry = _geometry(augment)
    if fold is None:
        ds.require_split(split)
    shards = ShardSamples(ds, Selection(split, fold))
    if not len(shards):
        raise DatasetError(f"{ds.location}: split {split!r} has no samples in shards")
    pixels = pixel_source(ds, shards.rows, options.original)
    source = CopySamples(shards, pixels)
    sized = [{"key": r["key"], "shape": pixels.shapes[r["key"]]} for r in shards.rows]
    check_sizes(ds, sized, split, augment)
    norm = normalization(augment, stats_for(unit_stats(ds), channels), channels)
    stored = {tuple(pixels.shapes[r["key"]]) for r in shards.rows}
    if on_device is None:
        on_device = torch.device(device).type == "cuda" and len(stored) == 1
    elif on_device and len(stored) > 1:
        raise LoaderSpecError(
            f"{ds.location}: split {split!r} holds images of {len(stored)} stored shapes, which "
            "do not stack into a batch before their views are cut; make the views where "
            "the samples are read (on_device=False)"
        )
    transform = ViewTransform(geometry, pipeline, seed, channels)
    intensity = ViewIntensity(pipeline.blur_radius, norm)
    if on_device:
        worker, batch = KeepIndex(), DeviceViews(transform, intensity)
    else:
        worker, batch = transform, intensity
    return TorchLoader(
        source,
        batch_size=options.batch_size,
        seed=seed,
        shuffle=training,
        shuffle_shards=options.shuffle_shards,
        uneven=uneven,
        drop_last=options.drop_last if training else False,
        rank=rank,
        world_size=world_size,
        num_workers=options.num_workers,
        device=torch.device(device),
        worker_transform=worker,
        device_transform=batch,
        identity=LoaderIdentity(ds.location, ds.card.fingerprint, split, fold),
        on_error=options.on_error,
    )
