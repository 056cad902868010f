"""fomo-mri's cached peers, configured as MONAI's documentation advises for throughput:
the deterministic transforms (load, channel first, RAS orientation, modalities stacked,
z-scored, cast, metadata dropped; foreground indices found when patches are centred on
them) run once and their results
are cached, on disk
(`PersistentDataset`) or in memory (`CacheDataset`, `copy_cache=False` since no random
transform writes into the cache); the random ones (several patches cut from each volume
read, flips, quarter turns, gamma, contrast, noise) run per epoch in DataLoader workers.
The random transforms draw with the probabilities of the engine's augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["monai_dataset", "monai_loader", "monai_transforms", "prepare"]


def monai_transforms(modalities: Sequence[str], patch, samples: int, augment, mask: str = "seg"):
    """(deterministic, random) MONAI transform chains; `augment` is the engine's Augment3D
    (None: cut the patches only)."""
    from monai.transforms import (
        CastToTyped,
        Compose,
        ConcatItemsd,
        DeleteItemsd,
        EnsureChannelFirstd,
        EnsureTyped,
        FgBgToIndicesd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        RandAdjustContrastd,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityFixedMeand,
        RandSpatialCropSamplesd,
    )

    keys = [*modalities, mask]
    # patches around foreground need its indices: found once, as MONAI's tutorials do
    find = [FgBgToIndicesd(keys=mask)] if augment is not None else []
    deterministic = Compose(
        [
            LoadImaged(keys=keys, image_only=True),
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
            Orientationd(keys=keys, axcodes="RAS"),
            ConcatItemsd(keys=list(modalities), name="image"),
            DeleteItemsd(keys=list(modalities)),
            NormalizeIntensityd(keys="image", channel_wise=True),
            CastToTyped(keys=["image", mask], dtype=(np.float32, np.uint8)),
            EnsureTyped(keys=["image", mask], track_meta=False),  # plain tensors: faster
            *find,
        ]
    )
    both = ["image", mask]
    if augment is None:
        crop = RandSpatialCropSamplesd(
            keys=both, roi_size=patch, num_samples=samples, random_size=False
        )
        return deterministic, Compose([crop])
    indices = [f"{mask}_fg_indices", f"{mask}_bg_indices"]
    drop = DeleteItemsd(keys=indices)  # from each patch's own dict, never from the cache
    steps = [
        RandCropByPosNegLabeld(
            keys=both,
            label_key=mask,
            spatial_size=patch,
            pos=1,
            neg=2,
            num_samples=samples,
            fg_indices_key=indices[0],
            bg_indices_key=indices[1],
        ),
        drop,
        *[RandFlipd(keys=both, prob=0.5, spatial_axis=axis) for axis in augment.flip_axes],
    ]
    if augment.rot90_xy:  # k in 0..3, each equally likely, as the engine draws it
        steps.append(RandRotate90d(keys=both, prob=0.75, max_k=3, spatial_axes=(1, 2)))
    if augment.gamma:
        steps.append(RandAdjustContrastd(keys="image", prob=augment.gamma_p, gamma=augment.gamma))
    if augment.contrast:
        low, high = augment.contrast
        factor = max(1 - low, high - 1)
        steps.append(
            RandScaleIntensityFixedMeand(keys="image", prob=augment.contrast_p, factors=factor)
        )
    if augment.noise_std:
        steps.append(RandGaussianNoised(keys="image", prob=augment.noise_p, std=augment.noise_std))
    return deterministic, Compose(steps)


def monai_dataset(kind: str, items: list[dict], chains, cache_dir: Path | None = None):
    """A `PersistentDataset` (kind 'persistent', cached under `cache_dir`) or `CacheDataset`
    ('cache', cached in memory by 2 threads) over `items` (dicts of file paths)."""
    from monai.data import CacheDataset, PersistentDataset
    from monai.transforms import Compose

    deterministic, random = chains
    # both datasets cache what the chain gives up to its first random transform
    transform = Compose([*deterministic.transforms, *random.transforms])
    if kind == "persistent":
        return PersistentDataset(items, transform=transform, cache_dir=cache_dir)
    return CacheDataset(
        items, transform=transform, cache_rate=1.0, num_workers=2, copy_cache=False, progress=False
    )


def prepare(dataset, threads: int = 2) -> None:
    """Fill a PersistentDataset's disk cache with `threads` threads, as CacheDataset fills
    its memory when it is made (MONAI writes the cache on first use otherwise)."""
    from concurrent.futures import ThreadPoolExecutor

    from monai.data import PersistentDataset

    if isinstance(dataset, PersistentDataset):
        with ThreadPoolExecutor(threads) as pool:  # the deterministic part, to cache_dir
            list(pool.map(dataset._cachecheck, dataset.data))


def monai_loader(dataset, workers: int, prefetch: int = 4):
    """MONAI's DataLoader (list_data_collate: the patches cut from one volume form a
    batch), persistent workers and prefetch as the engine's DataLoaders have them."""
    from monai.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=1,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers else None,
    )
