"""The pipeline shared by the volume ingests (TIFF stacks, NIfTI): one Dask task per sample
reads, checks and writes that sample's Zarr group whole; optional fixed crops then go to
WebDataset shards, one task per shard."""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medshard import __version__
from medshard.errors import BadInputError
from medshard.ingest.build import Staging, check_output
from medshard.ingest.cluster import dask_client, run_tasks
from medshard.ingest.options import IngestOptions
from medshard.ingest.result import IngestResult, count_splits
from medshard.ingest.splits import make_splits, quantile_strata
from medshard.ingest.table import LabelSpec
from medshard.ingest.volume_read import check_volume
from medshard.ingest.windows import WindowSpec, write_window_shards
from medshard.shards.card import ChannelStats, DatasetCard, ShardInfo, write_card
from medshard.shards.foreground import write_foreground
from medshard.shards.manifest import write_manifest, write_rejected
from medshard.shards.zarr_store import consolidate, create_store, write_sample

__all__ = ["VolumeIngestOptions", "VolumeJob", "LoadedVolume", "run_volume_ingest"]

_VOXEL_SAMPLE = 20_000  # voxels per sample and channel kept for the percentiles
_FOREGROUND_POINTS = 256  # voxel coordinates kept per sample and mask label


class VolumeIngestOptions(IngestOptions):
    """Options every volume and video ingest shares."""

    patch_size: tuple[int, int, int] = (64, 64, 64)
    crops: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class LoadedVolume:
    image: np.ndarray  # (c, z, y, x) for volumes, (t, y, x[, c]) for video
    mask: np.ndarray | None  # (z, y, x)
    spacing: tuple[float, ...]  # per non-channel axis
    unit: str | None  # of the spatial axes; None: pixels (video)
    sources: list[tuple[str, list[Path]]]  # (what the manifest lists, the files behind it)
    attributes: dict = field(default_factory=dict)
    axes: str = "czyx"
    chunks: tuple[int, ...] | None = None  # None: from the patch size
    manifest: dict = field(default_factory=dict)  # extra manifest fields (fps, timestamps)


@dataclass(frozen=True)
class VolumeJob:
    row: int  # data row of the input table, -1 when the sample has none
    key: str
    source: str  # how a message names the sample
    group: str
    split: str | None
    parsed: dict  # label fields
    loader: Callable[..., LoadedVolume]  # a module-level function, so it pickles
    args: tuple


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _write_volume(job: VolumeJob, dataset_dir: str, patch, spacing) -> dict:
    """Dask task: load, check and write one sample; a refusal comes back as its reason."""
    try:
        volume = job.loader(*job.args)
        channel_first = (
            np.moveaxis(volume.image, volume.axes.index("c"), 0)
            if "c" in volume.axes
            else volume.image[None]
        )
        mask = check_volume(channel_first, volume.mask)
    except BadInputError as exc:
        return {"refused": exc.reason, "source": exc.source}
    except (ValueError, OSError) as exc:
        return {"refused": str(exc), "source": job.source}
    image = volume.image
    spacing = tuple(spacing or volume.spacing)
    written = write_sample(
        dataset_dir,
        job.key,
        image,
        axes=volume.axes,
        spacing=spacing,
        patch=patch,
        mask=mask,
        unit=volume.unit,
        attributes=volume.attributes,
        chunks=volume.chunks,
    )
    rng = np.random.default_rng(zlib.crc32(job.key.encode()))
    flat = channel_first.reshape(channel_first.shape[0], -1)
    picks = rng.choice(flat.shape[1], size=min(_VOXEL_SAMPLE, flat.shape[1]), replace=False)
    as_float = flat.astype(np.float64)
    foreground = {}
    if mask is not None:
        for label in np.unique(mask):
            if label == 0:
                continue
            coords = np.argwhere(mask == label)
            keep = rng.choice(len(coords), size=min(_FOREGROUND_POINTS, len(coords)), replace=False)
            foreground[int(label)] = coords[np.sort(keep)].astype(np.int32)
    return {
        **written,
        "shape": list(image.shape),
        "dtype": str(image.dtype),
        "spacing": list(spacing),
        "source": [name for name, _ in volume.sources],
        "source_sha256": [_digest(files) for _, files in volume.sources],
        "source_bytes": sum(p.stat().st_size for _, files in volume.sources for p in files),
        "mask_dtype": None if mask is None else str(mask.dtype),
        "sum": as_float.sum(axis=1),
        "sum_sq": np.einsum("ij,ij->i", as_float, as_float),
        "count": flat.shape[1],
        "min": flat.min(axis=1).astype(np.float64),
        "max": flat.max(axis=1).astype(np.float64),
        "voxels": flat[:, picks].astype(np.float64),
        "foreground": foreground,
        **volume.manifest,
    }


def _stats(results: list[dict]) -> ChannelStats:
    count = sum(r["count"] for r in results)
    mean = sum(r["sum"] for r in results) / count
    std = np.sqrt(np.maximum(sum(r["sum_sq"] for r in results) / count - mean**2, 0))
    voxels = np.concatenate([r["voxels"] for r in results], axis=1)
    return ChannelStats(
        mean=mean.tolist(),
        std=std.tolist(),
        min=np.min([r["min"] for r in results], axis=0).tolist(),
        max=np.max([r["max"] for r in results], axis=0).tolist(),
        p0_5=np.percentile(voxels, 0.5, axis=1).tolist(),
        p99_5=np.percentile(voxels, 99.5, axis=1).tolist(),
    )


def _stop_at_first(rejected: list[dict], on_error: str) -> None:
    if rejected and on_error == "fail":
        first = min(rejected, key=lambda r: (r["row"], r["source"]))
        raise BadInputError(first["source"], first["reason"])


def run_volume_ingest(
    jobs: list[VolumeJob],
    rejected: list[dict],
    *,
    options: VolumeIngestOptions,
    spec: LabelSpec,
    fingerprint: str,
    channel_names: list[str],
    sources: dict,
    command: str,
    kind: str = "volumes",
    windows: Callable | None = None,
) -> IngestResult:
    """Write every job's sample, then splits, windows (crops or clips), manifest and card;
    commit atomically. `windows(client, dataset_dir, manifest, spec, options)` returns the
    window rows and shards; by default the crops of `options.crops`."""
    started = time.perf_counter()
    o = options
    _stop_at_first(rejected, o.on_error)
    if check_output(o.out, fingerprint, o.overwrite):
        return IngestResult.unchanged(o.out)
    with dask_client(o.workers, o.scheduler, o.processes) as client, Staging(o.out) as staging:
        create_store(staging.dir)
        items = [(job, str(staging.dir), o.patch_size, o.spacing) for job in jobs]
        outcomes = run_tasks(
            client,
            _star_write_volume,
            items,
            description="videos" if kind == "video" else "volumes",
            quiet=o.quiet,
        )
        results = []
        for job, outcome in zip(jobs, outcomes):
            if "refused" in outcome:
                rejected.append(
                    {
                        "row": job.row if job.row >= 0 else None,
                        "source": outcome["source"],
                        "key": job.key,
                        "reason": outcome["refused"],
                    }
                )
            else:
                results.append((job, outcome))
        rejected.sort(key=lambda r: (r["row"] if r["row"] is not None else -1, r["source"]))
        _stop_at_first([{**r, "row": r["row"] or 0} for r in rejected], o.on_error)
        if not results:
            raise BadInputError(
                str(o.out), f"no sample could be ingested ({len(rejected)} refused)"
            )

        splits, folds = _assign_splits(results, spec, o)
        manifest = [
            _manifest_row(job, r, split, fold)
            for (job, r), split, fold in zip(results, splits, folds)
        ]
        crop_rows, shards = [], []
        windows = windows or (_write_crop_shards if o.crops else None)
        if windows is not None:
            crop_rows, shards = windows(client, staging.dir, manifest, spec, o)
        write_manifest(staging.dir, manifest + crop_rows)
        write_foreground(
            staging.dir,
            [
                {"key": job.key, "label": label, "coords": coords}
                for job, r in results
                for label, coords in r["foreground"].items()
            ],
        )
        if rejected:
            write_rejected(staging.dir, rejected)
        consolidate(staging.dir)
        train = [r for (_, r), s in zip(results, splits) if s == "train"] or [r for _, r in results]
        card = DatasetCard(
            kind=kind,
            task=spec.task,
            fields=["image"]
            + (["mask"] if any(r["mask_dtype"] for _, r in results) else [])
            + sorted({f for row in crop_rows for f in row["members"]}),
            label_names=spec.names,
            target_name=spec.target_col,
            counts=count_splits(manifest, spec.names),
            folds=o.folds if o.folds > 1 else 0,
            channel_names=channel_names,
            crop_size=list(o.crops) if o.crops else None,
            shards=shards,
            stats=_stats(train),
            rejected=len(rejected),
            sources=sources,
            options=o.identity(),
            command=command,
            fingerprint=fingerprint,
            created_by=f"medshard {__version__}",
        )
        write_card(staging.dir, card)
        staging.commit()
    source_bytes = sum(r["source_bytes"] for _, r in results)
    frames = sum(r["shape"][0] for _, r in results) if kind == "video" else 0
    return IngestResult.from_card(o.out, card, time.perf_counter() - started, source_bytes, frames)


def _star_write_volume(item: tuple) -> dict:
    return _write_volume(*item)


def _assign_splits(results, spec: LabelSpec, o: VolumeIngestOptions) -> tuple[list, list]:
    jobs = [job for job, _ in results]
    if all(job.split for job in jobs):
        return [job.split for job in jobs], [-1] * len(jobs)
    if spec.task == "regression":
        strata = quantile_strata([job.parsed["target"] for job in jobs])
    else:
        strata = [spec.stratum(job.parsed) for job in jobs]
    return make_splits(
        strata,
        [job.group for job in jobs],
        val_fraction=o.val_fraction,
        test_fraction=o.test_fraction,
        folds=o.folds,
        seed=o.seed,
    )


def _manifest_row(job: VolumeJob, r: dict, split: str, fold: int) -> dict:
    return {
        "key": job.key,
        "split": split,
        "fold": int(fold),
        "subject": job.group,
        "label": job.parsed.get("label"),
        "labels": job.parsed.get("labels"),
        "target": job.parsed.get("target"),
        "source": r["source"],
        "source_sha256": r["source_sha256"],
        "shape": r["shape"],
        "dtype": r["dtype"],
        "spacing": r["spacing"],
        "fps": r.get("fps"),
        "timestamps": r.get("timestamps"),
        "shard": None,
        "offset": None,
        "members": None,
        "zarr_path": r["zarr_path"],
        "bytes": r["bytes"],
    }


def _write_crop_shards(
    client, dataset_dir: Path, manifest: list[dict], spec: LabelSpec, o: VolumeIngestOptions
) -> tuple[list[dict], list[ShardInfo]]:
    return write_window_shards(
        client,
        dataset_dir,
        manifest,
        WindowSpec("crop", tuple(o.crops)),
        spec.names,
        max_bytes=o.shard_bytes,
        max_samples=o.shard_samples,
        quiet=o.quiet,
    )
