"""`medshard bench DATASET`: the engine's loader on a user's own dataset, and the lazy
baseline over the raw sources when the manifest still reaches them."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from medshard.bench.baselines import LazyImageFiles, LazyNiftiPatches, LazyVideoClips
from medshard.bench.measure import Measurement, measure
from medshard.loaders import Augment2D, Augment3D, build_loader, dataset_channels
from medshard.loaders.transforms import FrameTransform, VolumeTransform
from medshard.shards.reader import Dataset, open_dataset

__all__ = ["bench_dataset"]


def _label(row: dict):
    for name in ("label", "labels", "target"):
        if row.get(name) is not None:
            return name, row[name]
    return "label", 0


def _baseline(
    ds: Dataset, split: str, batch_size: int, workers: int, patch, clip_len, plain: Augment2D
):
    """The lazy per-file loader over the sources, or None when they cannot be reached;
    images and frames with the engine's `plain` augmentation."""
    root = Path(ds.card.sources.get("root", ""))
    rows = [
        r
        for r in ds.manifest.to_pylist()
        if r["split"] == split and (r["zarr_path"] if ds.card.kind != "images" else r["shard"])
    ]
    if not rows or not all((root / s).exists() for r in rows for s in r["source"]):
        return None
    stats = ds.card.stats
    channels = dataset_channels(ds) if ds.card.kind != "volumes" else None
    if ds.card.kind == "images":
        name = _label(rows[0])[0]
        transform = FrameTransform(plain, 0, False, None, channels)
        dataset = LazyImageFiles(
            root, [r["source"][0] for r in rows], [_label(r)[1] for r in rows], transform, name
        )
    elif ds.card.kind == "volumes" and patch and ds.card.options.get("modalities"):
        transform = VolumeTransform(Augment3D(normalize="none"), 0, False, stats.model_dump())
        mask = bool(ds.card.options.get("mask_col"))
        subjects = [
            (
                [root / s for s in (r["source"][:-1] if mask else r["source"])],
                root / r["source"][-1] if mask else None,
                _label(r)[1],
            )
            for r in rows
        ]
        if not mask:
            return None
        dataset = LazyNiftiPatches(subjects, patch, 4, transform)
    elif ds.card.kind == "video" and clip_len:
        transform = FrameTransform(plain, 0, False, None, channels)
        size = tuple(ds.card.options["size"])
        videos = [(root / r["source"][0], r["shape"][0], _label(r)[1]) for r in rows]
        dataset = LazyVideoClips(videos, clip_len, 1, size, transform)
    else:
        return None
    return lambda: DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)


def bench_dataset(
    path: Path,
    *,
    split: str = "train",
    batch_size: int = 32,
    workers: int = 2,
    repetitions: int = 3,
    patch_size=None,
    clip_len=None,
    max_batches: int | None = None,
    resize: tuple[int, int] | None = None,
) -> tuple[Measurement, Measurement | None]:
    """(engine, baseline or None) measurements of one split, decode and batch only (2D
    images resized to `resize` where given: images of several sizes need it)."""
    ds = open_dataset(path)
    plain_2d = Augment2D(normalize="none", resize=resize)
    plain = Augment3D(normalize="none") if ds.card.kind == "volumes" else plain_2d
    options = dict(
        batch_size=batch_size,
        augment=plain,
        num_workers=workers,
        training=False,
        shuffle=True,
        patch_size=patch_size,
        clip_len=clip_len,
    )
    engine = measure(
        "engine",
        lambda: build_loader(ds, split, **options),
        repetitions=repetitions,
        max_batches=max_batches,
    )
    baseline_batches = _baseline(ds, split, batch_size, workers, patch_size, clip_len, plain_2d)
    baseline = None
    if baseline_batches is not None:
        baseline = measure(
            "baseline", baseline_batches, repetitions=repetitions, max_batches=max_batches
        )
    return engine, baseline
