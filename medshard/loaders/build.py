"""`build_loader`: one entry point from a dataset split to batches of torch tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from medshard.errors import DatasetError
from medshard.loaders.augment import Augment2D, Augment3D
from medshard.loaders.frame_format import check_sizes, dataset_channels, stats_for, unit_stats
from medshard.loaders.partition import Uneven, num_batches, rank_count
from medshard.loaders.sources import ClipSamples, PadMode, PatchSamples, Selection, ShardSamples
from medshard.loaders.topology import current_topology
from medshard.loaders.torch_loader import LoaderIdentity, TorchLoader
from medshard.loaders.transforms import FrameTransform, VolumeTransform
from medshard.shards.reader import Dataset, open_dataset

__all__ = ["build_loader", "dali_available"]

Backend = Literal["auto", "dali", "torch"]


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


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
            f"{ds.path}: a 3D augmentation (Augment3D) does not fit {kind} "
            "(2D images or video frames take Augment2D)"
        )
    if isinstance(augment, Augment2D) and kind == "volumes":
        raise DatasetError(
            f"{ds.path}: a 2D augmentation (Augment2D) does not fit volumes (they take Augment3D)"
        )


def _check_plan(
    ds: Dataset, role: str, num_samples: int, world_size: int, batch_size: int, uneven, drop_last
) -> None:
    """Refuse a plan that leaves ranks without a batch: every rank (nothing to train on),
    or with uneven='uneven' some ranks (they would wait for the others' collectives)."""
    counts = [rank_count(num_samples, r, world_size, uneven) for r in range(world_size)]
    if uneven == "uneven" and min(counts) == 0:
        raise DatasetError(
            f"{ds.path}: split {role} holds {num_samples} samples, fewer than the "
            f"{world_size} ranks, so uneven='uneven' would leave rank {num_samples} without "
            f"a batch; run at most {num_samples} processes"
        )
    if num_batches(max(counts), batch_size, drop_last):
        return
    if max(counts) == 0:
        raise DatasetError(
            f"{ds.path}: split {role} holds {num_samples} samples, fewer than the "
            f"{world_size} ranks, so uneven='drop' would leave every rank without a batch; "
            "run fewer processes or use uneven='pad'"
        )
    raise DatasetError(
        f"{ds.path}: split {role} gives each of the {world_size} ranks {max(counts)} "
        f"samples, fewer than one batch of {batch_size}, so drop_last would leave every "
        "rank without a batch"
    )


def build_loader(
    dataset: str | Path | Dataset,
    split: str,
    *,
    batch_size: int,
    augment: Augment2D | Augment3D | None = None,
    backend: Backend = "auto",
    seed: int = 0,
    training: bool = True,
    shuffle: bool | None = None,
    patch_size: tuple[int, int, int] | None = None,
    samples_per_volume: int = 4,
    foreground_prob: float = 0.33,
    clip_len: int | None = None,
    clips_per_video: int = 1,
    sequential_clips: bool | None = None,
    pad_mode: PadMode = "minimum",
    uneven: Uneven = "pad",
    drop_last: bool = False,
    num_workers: int = 2,
    device: str | torch.device | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    fields: tuple[str, ...] | None = None,
    fold: int | None = None,
    on_error: Literal["fail", "skip"] = "fail",
):
    """Batches of `split` as dicts of tensors (`image`, `mask`, `label`/`labels`/`target`,
    `key`) on `device`, for this rank.

    Volumes give random patches of `patch_size` from Zarr (else their stored crops), padded
    by `pad_mode` where a volume is smaller than the patch (see sources.PadMode); videos
    give clips of `clip_len` frames from Zarr (else their stored clips): random starts when
    training, every clip in turn otherwise. 2D batches have one channel count (the
    dataset's, or `augment.channels`) and unit-scale intensities. `training` turns on
    random augmentation and shuffling. With `fold` k, split 'val' is fold k and 'train'
    every other non-test fold. Rank and world size default to the launcher's. `uneven`
    shares the samples that do not divide among the ranks: 'pad' and 'drop' keep ranks
    even (training), 'uneven' reads each sample exactly once (evaluation).
    """
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    if batch_size <= 0:
        raise DatasetError(
            f"{ds.path}: batch_size must be a positive number of samples, not {batch_size}"
        )
    if fold is None:
        ds.require_split(split)
    elif not 0 <= fold < ds.card.folds:
        raise DatasetError(f"{ds.path}: no fold {fold}; the dataset has {ds.card.folds} folds")
    select = Selection(split, fold)
    available = _outputs(ds)
    missing = [f for f in fields or () if f not in available]
    if missing:
        raise DatasetError(
            f"{ds.path}: the dataset has no field {missing[0]!r} "
            f"(it gives {', '.join(sorted(available))})"
        )
    _check_augment(ds, augment)
    topology = current_topology()
    rank = topology.rank if rank is None else rank
    world_size = topology.world_size if world_size is None else world_size
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shuffle = training if shuffle is None else shuffle
    kind = ds.card.kind
    stats = ds.card.stats
    identity = LoaderIdentity(str(ds.path), ds.card.fingerprint, split, fold)
    role = repr(split) if fold is None else f"{split!r} of fold {fold}"

    if kind == "volumes" and patch_size is not None:
        source = PatchSamples(
            ds,
            select,
            patch_size,
            samples_per_volume=samples_per_volume,
            foreground_prob=foreground_prob if training else 0.0,
            seed=seed,
            pad_mode=pad_mode,
        )
    elif kind == "video" and clip_len is not None:
        sequential = not training if sequential_clips is None else sequential_clips
        source = ClipSamples(
            ds, select, clip_len, clips_per_video=clips_per_video, sequential=sequential, seed=seed
        )
    else:
        source = ShardSamples(ds, select)
        if not len(source):
            hint = {"volumes": "pass patch_size", "video": "pass clip_len"}.get(kind, "")
            raise DatasetError(
                f"{ds.path}: split {split!r} has no samples in shards"
                + (f"; {hint} to sample from the Zarr store" if hint else "")
            )

    _check_plan(ds, role, len(source), world_size, batch_size, uneven, drop_last)
    channels = augment.channels if isinstance(augment, Augment2D) else None
    channels = channels or dataset_channels(ds)
    stats_2d = stats_for(unit_stats(ds), channels) if kind in ("images", "video") else None
    dtypes = set()
    if kind == "images":
        check_sizes(ds, source.rows, split, augment)
        dtypes = {r["dtype"] for r in source.rows}
    decodable = dtypes <= {"uint8", "uint16"}  # DALI's image decoders give no float pixels

    use_dali = backend == "dali" or (
        backend == "auto" and kind == "images" and fold is None and decodable and dali_available()
    )
    if use_dali:
        if not isinstance(source, ShardSamples) or fold is not None:
            raise DatasetError(
                f"{ds.path}: the DALI backend reads the shards of a split (images, crops, "
                "clips); use backend='torch' for Zarr patches, Zarr clips and folds"
            )
        if not decodable:
            raise DatasetError(
                f"{ds.path}: split {role} holds {sorted(dtypes - {'uint8', 'uint16'})[0]} "
                "images, which the DALI backend does not decode; use backend='torch'"
            )
        from medshard.loaders.dali import DaliLoader

        return DaliLoader(
            ds,
            split,
            batch_size=batch_size,
            augment=augment or (Augment3D() if kind == "volumes" else Augment2D()),
            seed=seed,
            training=training,
            shuffle=shuffle,
            uneven=uneven,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            device=device,
            identity=identity,
            channels=channels,
            stats=stats_2d,
            threads=max(num_workers, 1),
        )

    if kind in ("images", "video"):
        transform = FrameTransform(augment or Augment2D(), seed, training, stats_2d, channels)
    else:
        transform = VolumeTransform(
            augment or Augment3D(),
            seed,
            training,
            stats.model_dump() if stats else None,
            on_device=device.type == "cuda",
        )
    on_device = isinstance(transform, VolumeTransform) and transform.on_device
    loader = TorchLoader(
        source,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        uneven=uneven,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        device=device,
        worker_transform=transform,
        device_transform=transform.batch if on_device else None,
        identity=identity,
        on_error=on_error,
    )
    return loader
