"""Lazy loaders written the way people write them today: one file opened per item.

Each applies the engine's own augmentation code to what it decodes, so a comparison
measures reading and decoding, not two different augmentation implementations."""

from medshard.bench.baselines.images import LazyImageFiles
from medshard.bench.baselines.mri import LazyNiftiPatches
from medshard.bench.baselines.nuclei import LazySliceCrops
from medshard.bench.baselines.video import LazyVideoClips

__all__ = ["LazyImageFiles", "LazyNiftiPatches", "LazySliceCrops", "LazyVideoClips"]
