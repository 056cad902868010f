"""fomo-mri: load every modality's whole .nii.gz (and the mask) with nibabel per item,
then crop one random patch (padded where the volume is smaller)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from torch.utils.data import Dataset


def _load(path: Path, dtype) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path).astype(dtype)
    return np.asarray(nib.load(path).dataobj, dtype=dtype)


class LazyNiftiPatches(Dataset):
    def __init__(
        self,
        subjects: list[tuple[list[Path], Path, int]],
        patch: tuple[int, int, int],
        per_subject: int,
        transform: Callable,
        seed: int = 0,
        mask_dtype=np.uint8,  # as the engine stores masks: the same bytes on both sides
    ):
        self.subjects, self.patch, self.per_subject = subjects, patch, per_subject
        self.transform, self.seed, self.mask_dtype = transform, seed, mask_dtype

    def __len__(self) -> int:
        return len(self.subjects) * self.per_subject

    def __getitem__(self, index: int) -> dict:
        modalities, mask_path, label = self.subjects[index // self.per_subject]
        image = np.stack([_load(p, np.float32) for p in modalities])
        mask = _load(mask_path, self.mask_dtype)
        rng = np.random.default_rng([self.seed, index])
        origin = [int(rng.integers(0, max(d - p, 0) + 1)) for d, p in zip(mask.shape, self.patch)]
        window = tuple(slice(o, o + p) for o, p in zip(origin, self.patch))
        # a volume smaller than the patch padded to it, as the engine's pad_mode "minimum"
        # (and MONAI's SpatialPad before a crop) does: the image by its least value
        short = [(0, max(p - d, 0)) for d, p in zip(mask.shape, self.patch)]
        sample = {
            "key": f"{mask_path.name}#{index}",
            "image": np.pad(image[(slice(None), *window)], [(0, 0), *short], mode="minimum"),
            "mask": np.pad(mask[window], short),
            "label": np.asarray(label),
        }
        return self.transform(sample, index, 0)
