"""Shards -> batches: DALI pipelines, a torch fallback, 3D patch and clip samplers."""

from medshard.loaders.augment import Augment2D, Augment3D
from medshard.loaders.build import batch_channels, build_loader, dali_available
from medshard.loaders.frame_format import dataset_channels
from medshard.loaders.partition import epoch_order, rank_batches, rank_indices, worker_batches
from medshard.loaders.spec import LoaderOptions, LoaderSpec, LoaderSpecError

__all__ = [
    "Augment2D",
    "Augment3D",
    "LoaderOptions",
    "LoaderSpec",
    "LoaderSpecError",
    "batch_channels",
    "build_loader",
    "dali_available",
    "dataset_channels",
    "epoch_order",
    "rank_batches",
    "rank_indices",
    "worker_batches",
]
