"""Lazy loaders written the way people write them today: one file opened per item.

Each applies the engine's own augmentation code to what it decodes, so a comparison
measures reading and decoding, not two different augmentation implementations."""

from benchmarks.baselines.images import LazyImageFiles
from benchmarks.baselines.mri import LazyNiftiPatches
from benchmarks.baselines.nuclei import LazySliceCrops
from benchmarks.baselines.video import LazyVideoClips

__all__ = ["LazyImageFiles", "LazyNiftiPatches", "LazySliceCrops", "LazyVideoClips"]
