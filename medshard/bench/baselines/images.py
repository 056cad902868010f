"""embryo-stage and mammo-tiles: open and decode one image file per item with PIL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


class LazyImageFiles(Dataset):
    def __init__(
        self, root: Path, paths: list[str], labels: list, transform: Callable, label_name: str
    ):
        self.root, self.paths, self.labels = Path(root), paths, labels
        self.transform, self.label_name = transform, label_name

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        with Image.open(self.root / self.paths[index]) as image:
            array = np.asarray(image)  # 16-bit PNGs open as I;16 and stay 16-bit
        array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        sample = {
            "key": self.paths[index],
            "image": np.ascontiguousarray(array),
            self.label_name: np.asarray(self.labels[index]),
        }
        return self.transform(sample, index, 0)
