"""`build_loader`: one entry point from a dataset split to batches of torch tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from medshard.errors import DatasetError
from medshard.loaders.augment import Augment2D, Augment3D
from medshard.loaders.copies import PixelSource, pixel_source
from medshard.loaders.frame_format import check_sizes, dataset_channels, stats_for, unit_stats
from medshard.loaders.partition import num_batches, rank_count
from medshard.loaders.sources import ClipSamples, PatchSamples, Selection, ShardSamples
from medshard.loaders.spec import LoaderSpec, LoaderSpecError
from medshard.loaders.topology import current_topology
from medshard.loaders.torch_loader import LoaderIdentity, TorchLoader
from medshard.loaders.transforms import FrameTransform, VolumeTransform
from medshard.shards.reader import Dataset, open_dataset
from medshard.shards.storage import is_url

__all__ = ["batch_channels", "build_loader", "dali_available"]


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def batch_channels(ds: Dataset, augment: Augment2D | Augment3D | None = None) -> int:
    """The channel count of every batch `build_loader` gives: a volume's stored channels;
    for images and video, `augment.channels`, else the dataset's (dataset_channels)."""
    if ds.card.kind == "volumes":
        return next(r["shape"][0] for r in ds.manifest.to_pylist() if r["shape"])
    return (augment.channels if isinstance(augment, Augment2D) else None) or dataset_channels(ds)


def _outputs(ds: Dataset) -> set[str]:
    card = ds.card
    names = {"image", "key"}
    if "mask" in card.fields or "mask.npy" in card.fields:
        names.add("mask")
    names |= {"classification": {"label"}, "multilabel": {"labels"}, "regression": {"target"}}.get(
        card.task or "", set()
    )
    return names


def _check_augment(ds: Dataset, augment) -> None:
    kind = ds.card.kind
    if augment is None:
        return
    if isinstance(augment, Augment3D) and kind != "volumes":
        raise DatasetError(
            f"{ds.location}: a 3D augmentation (Augment3D) does not fit {kind} "
            "(2D images or video frames take Augment2D)"
        )
    if isinstance(augment, Augment2D) and kind == "volumes":
        raise DatasetError(
            f"{ds.location}: a 2D augmentation (Augment2D) does not fit volumes "
            "(they take Augment3D)"
        )


def _check_plan(
    ds: Dataset, role: str, num_samples: int, world_size: int, batch_size: int, uneven, drop_last
) -> None:
    """Refuse a plan that leaves ranks without a batch: every rank (nothing to train on),
    or with uneven='uneven' some ranks (they would wait for the others' collectives)."""
    counts = [rank_count(num_samples, r, world_size, uneven) for r in range(world_size)]
    if uneven == "uneven" and min(counts) == 0:
        raise DatasetError(
            f"{ds.location}: split {role} holds {num_samples} samples, fewer than the "
            f"{world_size} ranks, so uneven='uneven' would leave rank {num_samples} without "
            f"a batch; run at most {num_samples} processes"
        )
    if num_batches(max(counts), batch_size, drop_last):
        return
    if max(counts) == 0:
        raise DatasetError(
            f"{ds.location}: split {role} holds {num_samples} samples, fewer than the "
            f"{world_size} ranks, so uneven='drop' would leave every rank without a batch; "
            "run fewer processes or use uneven='pad'"
        )
    raise DatasetError(
        f"{ds.location}: split {role} gives each of the {world_size} ranks {max(counts)} "
        f"samples, fewer than one batch of {batch_size}, so drop_last would leave every "
        "rank without a batch"
    )


def build_loader(
    dataset: str | Path | Dataset,
    split: str,
    spec: LoaderSpec | None = None,
    *,
    cache_dir: str | Path | None = None,
    cache_limit: int | str | None = None,
    endpoint_url: str | None = None,
    **fields,
):
    """Batches of `split` as dicts of tensors (`image`, `mask`, `label`/`labels`/`target`,
    `key`) on the spec's device, for this rank. `spec` (a LoaderSpec; a training config's
    loader options also do) gives the options and keyword `fields` override them, so
    `build_loader(ds, "train", batch_size=4, augment=Augment3D(...))` needs no spec.

    Volumes give random patches of `patch_size` from Zarr (else their stored crops), padded
    by `pad_mode` where a volume is smaller than the patch; videos give clips of
    `clip_len` frames from Zarr (else their stored clips): random starts when training,
    every clip in turn otherwise. 2D images are read from the dataset's training copies
    when it has them (`original` reads the original bytes); 2D batches have one channel
    count (the dataset's, or `augment.channels`) and unit-scale intensities. `training`
    turns on random augmentation and shuffling. With `fold` k, split 'val' is fold k and
    'train' every other non-test fold. Rank and world size default to the launcher's.
    `uneven` shares the samples that do not divide among the ranks: 'pad' and 'drop' keep
    ranks even (training), 'uneven' reads each sample exactly once (evaluation).

    An s3:// URL is read through a cache as `open_dataset` reads it: `cache_dir`,
    `cache_limit` and `endpoint_url` are open_dataset's. They are refused for a directory
    (it has no cache) and for a Dataset already open (give them to open_dataset).
    """
    ds = _opened(dataset, cache_dir=cache_dir, cache_limit=cache_limit, endpoint_url=endpoint_url)
    try:
        spec = LoaderSpec.of(spec, **fields)
    except LoaderSpecError as exc:
        raise LoaderSpecError(f"{ds.location}: {exc}") from None
    if spec.fold is None:
        ds.require_split(split)
    elif spec.fold >= ds.card.folds:
        raise DatasetError(
            f"{ds.location}: no fold {spec.fold}; the dataset has {ds.card.folds} folds"
        )
    available = _outputs(ds)
    missing = [f for f in spec.fields or () if f not in available]
    if missing:
        raise DatasetError(
            f"{ds.location}: the dataset has no field {missing[0]!r} "
            f"(it gives {', '.join(sorted(available))})"
        )
    _check_augment(ds, spec.augment)
    topology = current_topology()
    rank = topology.rank if spec.rank is None else spec.rank
    world_size = topology.world_size if spec.world_size is None else spec.world_size
    device = torch.device(spec.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kind = ds.card.kind
    role = repr(split) if spec.fold is None else f"{split!r} of fold {spec.fold}"
    source = _source(ds, Selection(split, spec.fold), spec)
    shuffle = spec.training if spec.shuffle is None else spec.shuffle
    _check_plan(ds, role, len(source), world_size, spec.batch_size, spec.uneven, spec.drop_last)

    augment = spec.augment or (Augment3D() if kind == "volumes" else Augment2D())
    channels = batch_channels(ds, augment)
    stats_2d = stats_for(unit_stats(ds), channels) if kind in ("images", "video") else None
    dtypes, pixels = set(), None
    if kind == "images":
        pixels = pixel_source(ds, source.rows, spec.original)
        sized = [{"key": r["key"], "shape": pixels.shapes[r["key"]]} for r in source.rows]
        check_sizes(ds, sized, split, spec.augment)
        dtypes = {r["dtype"] for r in source.rows}
    decodable = dtypes <= {"uint8", "uint16"}  # DALI's image decoders give no float pixels
    common = dict(
        batch_size=spec.batch_size,
        seed=spec.seed,
        shuffle=shuffle,
        shuffle_shards=spec.shuffle_shards,
        uneven=spec.uneven,
        drop_last=spec.drop_last,
        rank=rank,
        world_size=world_size,
        device=device,
        identity=LoaderIdentity(ds.location, ds.card.fingerprint, split, spec.fold),
    )

    # DALI where it pays: a GPU that decodes and augments; on a CPU the torch backend's
    # image loader does less work per sample than a CPU-only DALI pipeline
    use_dali = spec.backend == "dali" or (
        spec.backend == "auto"
        and kind == "images"
        and spec.fold is None
        and decodable
        and device.type == "cuda"
        and dali_available()
    )
    if use_dali:
        _check_dali(ds, role, source, spec.fold, dtypes, decodable)
        from medshard.loaders.dali import DaliLoader
        from medshard.loaders.dali_images import check_raw_copies

        if pixels is not None:
            check_raw_copies(ds.path, pixels, dtypes)

        return DaliLoader(
            ds,
            split,
            augment=augment,
            training=spec.training,
            channels=channels,
            stats=stats_2d,
            threads=max(spec.num_workers, 1),
            pixels=pixels,
            **common,
        )

    if kind == "images":
        return _image_loader(source, pixels, augment, spec, channels, stats_2d, common)

    if kind in ("images", "video"):
        transform = FrameTransform(augment, spec.seed, spec.training, stats_2d, channels)
    else:
        stats = ds.card.stats
        transform = VolumeTransform(
            augment,
            spec.seed,
            spec.training,
            stats.model_dump() if stats else None,
            on_device=device.type == "cuda",
        )
    if isinstance(source, (PatchSamples, ClipSamples)):  # threads read into batch slots
        from medshard.loaders.slots import zarr_loader

        threads = max(spec.num_workers, 1)
        return zarr_loader(source, transform, threads=threads, on_error=spec.on_error, **common)
    on_device = isinstance(transform, VolumeTransform) and transform.on_device
    return TorchLoader(
        source,
        num_workers=spec.num_workers,
        worker_transform=transform,
        device_transform=transform.batch if on_device else None,
        on_error=spec.on_error,
        **common,
    )


def _opened(dataset: str | Path | Dataset, **storage) -> Dataset:
    """The dataset, opened with the cache options when it is a URL."""
    given = [name for name, value in storage.items() if value is not None]
    if not given:
        return dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    if isinstance(dataset, Dataset):
        raise DatasetError(
            f"{dataset.location}: the dataset is already open, so {', '.join(given)} cannot "
            "apply; give them to open_dataset"
        )
    if not is_url(dataset):
        raise DatasetError(
            f"{dataset}: {', '.join(given)} apply only to a dataset at an s3:// URL, not to "
            "a directory"
        )
    return open_dataset(dataset, **storage)


def _image_loader(
    source: ShardSamples,
    pixels: PixelSource,
    augment: Augment2D,
    spec: LoaderSpec,
    channels: int,
    stats,
    common: dict,
):
    """The torch backend's 2D image loader: threads fill preallocated batches."""
    from medshard.loaders.images2d import ImageFiller, ImageLoader

    filler = ImageFiller(
        source,
        pixels,
        augment,
        seed=spec.seed,
        training=spec.training,
        stats=stats,
        channels=channels,
        on_device=common["device"].type == "cuda",
    )
    return ImageLoader(filler, threads=max(spec.num_workers, 1), on_error=spec.on_error, **common)


def _source(ds: Dataset, select: Selection, spec: LoaderSpec):
    """Where the samples come from: Zarr patches or clips, else the stored shards."""
    kind = ds.card.kind
    if kind == "volumes" and spec.patch_size is not None:
        return PatchSamples(
            ds,
            select,
            spec.patch_size,
            samples_per_volume=spec.samples_per_volume,
            foreground_prob=spec.foreground_prob if spec.training else 0.0,
            seed=spec.seed,
            pad_mode=spec.pad_mode,
        )
    if kind == "video" and spec.clip_len is not None:
        sequential = not spec.training if spec.sequential_clips is None else spec.sequential_clips
        return ClipSamples(
            ds,
            select,
            spec.clip_len,
            clips_per_video=spec.clips_per_video,
            sequential=sequential,
            seed=spec.seed,
        )
    source = ShardSamples(ds, select)
    if not len(source):
        hint = {"volumes": "pass patch_size", "video": "pass clip_len"}.get(kind, "")
        raise DatasetError(
            f"{ds.location}: split {select.split!r} has no samples in shards"
            + (f"; {hint} to sample from the Zarr store" if hint else "")
        )
    return source


def _check_dali(ds: Dataset, role: str, source, fold, dtypes: set, decodable: bool) -> None:
    """Refuse what the DALI backend cannot read: Zarr samples, folds, float images."""
    if not isinstance(source, ShardSamples) or fold is not None:
        raise DatasetError(
            f"{ds.location}: the DALI backend reads the shards of a split (images, crops, "
            "clips); use backend='torch' for Zarr patches, Zarr clips and folds"
        )
    if not decodable:
        raise DatasetError(
            f"{ds.location}: split {role} holds {sorted(dtypes - {'uint8', 'uint16'})[0]} "
            "images, which the DALI backend does not decode; use backend='torch'"
        )
