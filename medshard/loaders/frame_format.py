"""What every batch of 2D images or video frames looks like, whatever its samples mix: one
channel count (gray repeated, alpha dropped, colour to gray by luma when one channel is
asked for), intensities in unit scale (each sample divided by its own bit depth's
maximum), the card's statistics matched to both, and one size."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from medshard.errors import DatasetError

__all__ = [
    "LUMA",
    "bit_depth_scale",
    "check_sizes",
    "dataset_channels",
    "stats_for",
    "stored_channels",
    "to_channels",
    "unit_stats",
]

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL and DALI turn RGB into gray


@lru_cache(maxsize=64)
def bit_depth_scale(dtype) -> float:
    """The value that maps a sample's stored values to [0, 1]: its integer type's maximum;
    float images are taken as stored."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def _colour_channels(stored: int) -> int:
    return {2: 1, 4: 3}.get(stored, stored)  # gray+alpha and RGBA lose their alpha


def _stored_channels(kind: str, shape: list[int]) -> int:
    if kind == "video":  # frames (T, H, W) or (T, H, W, C)
        return shape[3] if len(shape) == 4 else 1
    return shape[0]  # images (C, H, W)


def dataset_channels(ds) -> int:
    """The channels of every batch by default: the card's, else the most of any sample once
    alpha is dropped."""
    card_channels = getattr(ds.card, "channels", None)
    if card_channels:
        return int(card_channels)
    shapes = [r["shape"] for r in ds.manifest.to_pylist() if r["shape"]]
    return max((_colour_channels(_stored_channels(ds.card.kind, s)) for s in shapes), default=1)


def to_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """(..., c, H, W) floats as (..., channels, H, W); None keeps c, alpha dropped."""
    x = x[..., : _colour_channels(x.shape[-3]), :, :]
    if channels is None or x.shape[-3] == channels:
        return x
    if x.shape[-3] == 1:
        return x.expand(*x.shape[:-3], channels, *x.shape[-2:])
    if channels == 1 and x.shape[-3] == 3:
        weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * weights).sum(-3, keepdim=True)
    raise ValueError(f"cannot turn {x.shape[-3]} channels into {channels}")


def stored_channels(x, channels: int | None) -> tuple[torch.Tensor | np.ndarray, np.ndarray | None]:
    """(..., c, H, W) stored values (a tensor or a numpy array) as they enter the 2D
    chain: alpha dropped, gray repeated to `channels` (a view). Colour to gray is a
    weighted sum, which waits for floats: then the values keep their colour and `mix`
    holds the (1, 3) luma weights."""
    colour = _colour_channels(x.shape[-3])
    x = x[..., :colour, :, :]
    if channels is None or colour == channels:
        return x, None
    if colour == 1:
        shape = (*x.shape[:-3], channels, *x.shape[-2:])
        return (np.broadcast_to(x, shape) if isinstance(x, np.ndarray) else x.expand(shape)), None
    if channels == 1 and colour == 3:
        return x, np.asarray([LUMA])
    raise ValueError(f"cannot turn {colour} channels into {channels}")


def unit_stats(ds) -> tuple[list[float], list[float]] | None:
    """The card's per-channel mean and std in unit scale. Image cards that record their
    `channels` hold them so already; video cards (and image cards written before) hold
    stored units, of the dataset's widest type."""
    stats = ds.card.stats
    if stats is None:
        return None
    if ds.card.kind == "images" and getattr(ds.card, "channels", None):
        return list(stats.mean), list(stats.std)
    scale = max(
        (bit_depth_scale(r["dtype"]) for r in ds.manifest.to_pylist() if r["dtype"]), default=1.0
    )
    return [m / scale for m in stats.mean], [s / scale for s in stats.std]


def stats_for(
    stats: tuple[list[float], list[float]] | None, channels: int
) -> tuple[list[float], list[float]] | None:
    """Per-channel (mean, std) over the dataset's channels, matched to `channels` outputs
    the way `to_channels` turns the images."""
    if stats is None:
        return None
    mean, std = (list(v[: _colour_channels(len(v))]) for v in stats)
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1:
        return mean * channels, std * channels
    if channels == 1 and len(mean) == 3:
        # The luma-weighted std bounds the gray image's std from above (equal when the
        # colour channels move together): the card holds no covariances to do better.
        return [float(np.dot(LUMA, mean))], [float(np.dot(LUMA, std))]
    raise ValueError(f"cannot match statistics of {len(mean)} channels to {channels}")


def check_sizes(ds, rows: list[dict], split: str, augment) -> None:
    """Refuse a split of 2D images that would not stack into batches: different sizes and
    no resize or crop, or an image smaller than the crop. A random resized crop takes a
    box of any image to its own size."""
    sizes = {r["key"]: tuple(r["shape"][1:3]) for r in rows}
    if augment is not None and augment.random_resized_crop:
        return
    if augment is not None and augment.resize:
        crop = augment.random_crop
        if crop and (crop[0] > augment.resize[0] or crop[1] > augment.resize[1]):
            raise DatasetError(
                f"{ds.location}: the crop {crop[0]}x{crop[1]} does not fit in the resize "
                f"{augment.resize[0]}x{augment.resize[1]}"
            )
        return
    if augment is not None and augment.random_crop:
        crop = tuple(augment.random_crop)
        for key, size in sizes.items():
            if size[0] < crop[0] or size[1] < crop[1]:
                raise DatasetError(
                    f"{ds.location}: image {key!r} of split {split!r} is {size[0]}x{size[1]}, "
                    f"smaller than the crop {crop[0]}x{crop[1]}; add a resize to the "
                    "augmentation (Augment2D(resize=...))"
                )
        return
    first = next(iter(sizes.items()), None)
    other = next(((k, s) for k, s in sizes.items() if s != first[1]), None) if first else None
    if other:
        raise DatasetError(
            f"{ds.location}: images {first[0]!r} ({first[1][0]}x{first[1][1]}) and "
            f"{other[0]!r} ({other[1][0]}x{other[1][1]}) of split {split!r} differ in size "
            "and the augmentation neither resizes nor crops them; give it a resize, "
            "random_crop or random_resized_crop (Augment2D(resize=(H, W)) in Python, "
            "augment: {resize: [H, W]} in a config, --resize H,W to medshard bench)"
        )
