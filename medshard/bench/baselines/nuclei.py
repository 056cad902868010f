"""nuclei-3d: for each crop read the volume one TIFF per z-slice, keeping the 10 most
recent volumes in a per-worker cache, then cut the crop."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from torch.utils.data import Dataset


class LazySliceCrops(Dataset):
    def __init__(
        self,
        items: list[tuple[Path, tuple[int, int, int], int]],
        crop: tuple[int, int, int],
        transform: Callable,
        cache_size: int = 10,
    ):
        self.items, self.crop, self.transform = (
            items,
            crop,
            transform,
        )  # (sample dir, origin, label)
        self.cache: OrderedDict[Path, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.cache_size = cache_size

    def __len__(self) -> int:
        return len(self.items)

    def _volume(self, folder: Path) -> tuple[np.ndarray, np.ndarray]:
        if folder in self.cache:
            self.cache.move_to_end(folder)
            return self.cache[folder]
        stacks = []
        for part in ("raw", "mask"):
            slices = sorted((folder / part).glob("*.tif"))
            stacks.append(np.stack([tifffile.imread(s) for s in slices]))
        self.cache[folder] = (stacks[0], stacks[1])
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return self.cache[folder]

    def __getitem__(self, index: int) -> dict:
        folder, origin, label = self.items[index]
        image, mask = self._volume(folder)
        window = tuple(slice(o, o + s) for o, s in zip(origin, self.crop))
        sample = {
            "key": f"{folder.name}{origin}",
            "image": image[window][None].copy(),
            "mask": mask[window].copy(),
            "label": np.asarray(label),
        }
        return self.transform(sample, index, 0)
