"""The one ingest pipeline. A source format (images.py, tiff.py, nifti.py, video.py) turns
table rows or folders into jobs, one per sample, and reads a job into an EncodedImage or a
LoadedVolume; this module does the rest for every format: Dask tasks that read and check
each sample (writing arrays to Zarr as they go), splits, shards, manifest, card, commit."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medshard import __version__
from medshard.errors import BadInputError
from medshard.ingest.build import (
    MemberSource,
    SampleSpec,
    ShardTask,
    plan_shards,
    write_shard,
)
from medshard.ingest.cluster import dask_client, run_tasks
from medshard.ingest.members import json_member, label_members
from medshard.ingest.options import IngestOptions
from medshard.ingest.output import claim_output
from medshard.ingest.output import stale as is_stale
from medshard.ingest.result import IngestResult, count_splits
from medshard.ingest.splits import make_splits, quantile_strata
from medshard.ingest.stats import SampleStats, pool_stats, sample_stats
from medshard.ingest.table import LabelSpec
from medshard.ingest.volume_read import check_volume
from medshard.ingest.windows import WindowSpec, write_window_shards
from medshard.shards.card import DatasetCard, ShardInfo, write_card
from medshard.shards.foreground import write_foreground
from medshard.shards.manifest import write_manifest, write_rejected
from medshard.shards.zarr_store import consolidate, create_store, write_sample

__all__ = ["EncodedImage", "Job", "LoadedVolume", "run_ingest"]

_FOREGROUND_POINTS = 256  # voxel coordinates kept per sample and mask label
_SCRATCH = ".scratch"  # members waiting for their shard, inside the staging folder


@dataclass(frozen=True)
class EncodedImage:
    """A sample kept as its original encoded bytes in a shard (2D images)."""

    path: str | None  # the file whose bytes are stored; None: they are in `data`
    source: str  # how the manifest names it (the path as the table gives it)
    ext: str  # member extension: png, jpg or tif
    sha256: str
    nbytes: int
    shape: tuple[int, ...]  # (channels, height, width)
    dtype: str
    stats: SampleStats
    extra: tuple[tuple[str, bytes], ...] = ()  # more members made from it (training copy)
    data: bytes | None = None  # the encoded bytes, when no file of their own holds them


@dataclass(frozen=True)
class LoadedVolume:
    """A sample decoded to arrays, stored in the Zarr store (volumes, videos)."""

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
class Job:
    """One sample to ingest, as its source format found it."""

    row: int  # data row of the input table, -1 when the sample has none
    key: str
    source: str  # how a message names the sample
    group: str
    split: str | None
    parsed: dict  # label fields
    files: tuple[str, ...]  # the files and folders it reads (their sizes and times count)
    read: Callable[..., EncodedImage | LoadedVolume]  # module-level, so that it pickles
    args: tuple
    fold: int = -1  # kept when every job brings its split


def fingerprint(identity: dict, tables: Sequence[Path], files: Sequence[str]) -> str:
    """What makes two ingests the same: their options, the bytes of their tables, and the
    size and modification time of every file they read (a fixed or edited input counts)."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for table in tables:
        digest.update(Path(table).read_bytes())
    for name in files:
        path = Path(name)
        inside = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in inside:
            stat = file.stat()
            digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _volume_record(key: str, volume: LoadedVolume, dataset_dir: str, layout, spacing) -> dict:
    """Check and write one volume or video in `layout` (a ZarrLayout: patch size, codec,
    stored intensity type; a bare patch size takes the default layout)."""
    channel_first = (
        np.moveaxis(volume.image, volume.axes.index("c"), 0)
        if "c" in volume.axes
        else volume.image[None]
    )
    mask = check_volume(channel_first, volume.mask)
    spacing = tuple(spacing or volume.spacing)
    written = write_sample(
        dataset_dir,
        key,
        volume.image,
        axes=volume.axes,
        spacing=spacing,
        layout=layout,
        mask=mask,
        unit=volume.unit,
        attributes=volume.attributes,
        chunks=volume.chunks,
    )
    return {
        "zarr_path": written["zarr_path"],
        "bytes": written["bytes"],
        "shape": list(volume.image.shape),
        "dtype": written["dtype"],
        "spacing": list(spacing),
        "source": [name for name, _ in volume.sources],
        "source_sha256": [_digest(files) for _, files in volume.sources],
        "source_bytes": sum(p.stat().st_size for _, files in volume.sources for p in files),
        "masked": mask is not None,
        "stats": sample_stats(channel_first, seed=_seed(key)),
        "foreground": _foreground(key, mask),
        **volume.manifest,
    }


def _seed(key: str) -> int:
    """A sample's own random seed, the same on every machine and Python version."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def _foreground(key: str, mask: np.ndarray | None) -> dict[int, np.ndarray]:
    """A bounded sample of voxel coordinates per mask label, for foreground sampling."""
    if mask is None:
        return {}
    rng = np.random.default_rng(_seed(key))
    points = {}
    for label in np.unique(mask):
        if label == 0:
            continue
        coords = np.argwhere(mask == label)
        keep = rng.choice(len(coords), size=min(_FOREGROUND_POINTS, len(coords)), replace=False)
        points[int(label)] = coords[np.sort(keep)].astype(np.int32)
    return points


def _image_record(key: str, image: EncodedImage, dataset_dir: str) -> dict:
    """A source file's bytes stay where they are; bytes made in the task wait in the
    staging folder's scratch space until their shard is written, not in memory."""

    def scratch(name: str, data: bytes) -> MemberSource:
        path = Path(dataset_dir) / _SCRATCH / f"{key}.{name}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return MemberSource(str(path), hashlib.sha256(data).hexdigest())

    name = f"image.{image.ext}"
    if image.path is None:
        member = (name, scratch(name, image.data))
    else:
        member = (name, MemberSource(image.path, image.sha256))
    extra = [(field, scratch(field, data)) for field, data in image.extra]
    return {
        "member": member,
        "extra": extra,
        "extra_bytes": sum(len(data) for _, data in image.extra),
        "bytes": image.nbytes,
        "shape": list(image.shape),
        "dtype": image.dtype,
        "spacing": None,
        "source": [image.source],
        "source_sha256": [image.sha256],
        "source_bytes": image.nbytes,
        "stats": image.stats,
    }


def _read_jobs(jobs: list[Job], dataset_dir: str, patch, spacing) -> list[dict]:
    """Dask task: read, check and (arrays) write each job's sample; a refusal comes back
    as its reason and the source it names."""
    records = []
    for job in jobs:
        try:
            data = job.read(*job.args)
            if isinstance(data, EncodedImage):
                records.append(_image_record(job.key, data, dataset_dir))
            else:
                records.append(_volume_record(job.key, data, dataset_dir, patch, spacing))
        except BadInputError as exc:
            records.append({"refused": exc.reason, "source": exc.source})
        except (ValueError, OSError) as exc:
            records.append({"refused": str(exc), "source": job.source})
    return records


def _stop_at_first(rejected: list[dict], on_error: str) -> None:
    if rejected and on_error == "fail":
        first = min(rejected, key=_rejected_order)
        raise BadInputError(first["source"], first["reason"])


def _rejected_order(refusal: dict) -> tuple:
    return (refusal["row"] if refusal["row"] is not None else -1, refusal["source"])


def _refuse_duplicate_keys(jobs: list[Job], rejected: list[dict]) -> list[Job]:
    """Keys are unique across all inputs: a later job with a taken key is refused."""
    first: dict[str, Job] = {}
    kept = []
    for job in jobs:
        if job.key in first:
            taken = first[job.key]
            reason = (
                f"key {job.key!r} appears twice (rows {taken.row + 1} and {job.row + 1})"
                if taken.row >= 0 and job.row >= 0
                else f"key {job.key!r} is also the key of {taken.source}; rename one of them"
            )
            row = job.row if job.row >= 0 else None
            rejected.append({"row": row, "source": job.source, "key": job.key, "reason": reason})
        else:
            first[job.key] = job
            kept.append(job)
    return kept


@dataclass(frozen=True)
class Recipe:
    """What a source format asks of the pipeline, beside its jobs and options."""

    kind: str  # "images", "volumes" or "video"
    spec: LabelSpec
    identity: dict  # what decides the dataset's content (the card's `options`)
    tables: tuple[Path, ...]  # whose bytes the fingerprint covers
    sources: dict  # where the inputs are (the card's `sources`)
    command: str = ""
    channel_names: tuple[str, ...] = ()
    window: WindowSpec | None = None  # fixed crops or clips to shards as well
    patch_size: tuple[int, ...] | None = None  # Zarr chunks are sized for it
    spacing: tuple[float, ...] | None = None  # overrides the files' own
    jobs_per_task: int = 1


def run_ingest(
    jobs: list[Job], rejected: list[dict], recipe: Recipe, options: IngestOptions
) -> IngestResult:
    """Ingest `jobs` into a dataset at `options.out`: read them on Dask, split, write
    shards (and windows of stored arrays), manifest and card, commit atomically."""
    started = time.perf_counter()
    o = options
    jobs = _refuse_duplicate_keys(jobs, rejected)
    _stop_at_first(rejected, o.on_error)
    print_ = fingerprint(recipe.identity, recipe.tables, [f for job in jobs for f in job.files])
    # Held here, not only by the command line, so that Python callers get the lock and
    # the recovery of what a killed build left behind as well.
    # The files of every sample count as inputs too: --allow-outside-root reaches beyond
    # the folders that the options name.
    inputs = [*o.inputs(), *(Path(f) for job in jobs for f in job.files)]
    with claim_output(o.out, inputs) as claim:  # an s3:// --out: built here, then published
        for note in claim.notes:
            _errors().print(note, highlight=False, soft_wrap=True)
        stale = is_stale(claim.card(), recipe.identity, print_)
        if claim.check(print_, o.overwrite or stale, inputs):
            return IngestResult.unchanged(o.out)
        if stale and not o.overwrite:
            _errors().print(f"{claim.name}: its inputs changed since it was built; rebuilding it")
        with dask_client(o.workers, o.scheduler, o.processes) as client, claim.staging() as staging:
            results = _read_samples(client, jobs, rejected, staging.dir, recipe, o)
            card = _write_dataset(client, staging.dir, results, rejected, recipe, o, print_)
            staging.commit()
    source_bytes = sum(r["source_bytes"] for _, r in results)
    frames = sum(r["shape"][0] for _, r in results) if recipe.kind == "video" else 0
    return IngestResult.from_card(o.out, card, time.perf_counter() - started, source_bytes, frames)


def _read_samples(
    client, jobs: list[Job], rejected: list[dict], staging: Path, recipe: Recipe, o
) -> list[tuple[Job, dict]]:
    """Run every job's reader on the cluster; (job, record) of each sample that passed."""
    if recipe.kind != "images":
        create_store(staging)
    step = recipe.jobs_per_task
    items = [
        (jobs[s : s + step], str(staging), recipe.patch_size, recipe.spacing)
        for s in range(0, len(jobs), step)
    ]
    description = {"images": "decode", "video": "videos"}.get(recipe.kind, "volumes")
    chunks = run_tasks(client, _star_read_jobs, items, description=description, quiet=o.quiet)
    results = []
    for job, record in zip(jobs, [record for chunk in chunks for record in chunk]):
        if "refused" in record:
            row = job.row if job.row >= 0 else None
            refusal = {"row": row, "source": record["source"], "key": job.key}
            rejected.append({**refusal, "reason": record["refused"]})
        else:
            results.append((job, record))
    rejected.sort(key=_rejected_order)
    _stop_at_first(rejected, o.on_error)
    if not results:
        where = str(recipe.tables[0]) if recipe.tables else str(recipe.sources.get("root", o.out))
        raise BadInputError(where, f"no sample could be ingested ({len(rejected)} refused)")
    return results


def _write_dataset(
    client, staging: Path, results, rejected: list[dict], recipe: Recipe, o, print_: str
) -> DatasetCard:
    """Splits, shards, manifest, foreground, rejections and, last, the card."""
    spec, window = recipe.spec, recipe.window
    splits, folds = _assign_splits([job for job, _ in results], spec, o)
    manifest = [
        _manifest_row(job, record, split, fold)
        for (job, record), split, fold in zip(results, splits, folds)
    ]
    stored = [(row, record) for row, (_, record) in zip(manifest, results) if "member" in record]
    shards = _write_sample_shards(client, staging, stored, spec.names, o)
    shutil.rmtree(staging / _SCRATCH, ignore_errors=True)
    window_rows = []
    if window is not None:
        window_rows, window_shards = write_window_shards(
            client,
            staging,
            manifest,
            window,
            spec.names,
            max_bytes=o.shard_bytes,
            max_samples=o.shard_samples,
            quiet=o.quiet,
        )
        shards += window_shards
    manifest.sort(key=lambda row: (row["split"], row["key"]))
    write_manifest(staging, manifest + window_rows)
    if recipe.kind != "images":
        foreground = [
            {"key": job.key, "label": label, "coords": coords}
            for job, record in results
            for label, coords in record["foreground"].items()
        ]
        write_foreground(staging, foreground)
        consolidate(staging)
    if rejected:
        write_rejected(staging, rejected)
    train = [r["stats"] for (_, r), split in zip(results, splits) if split == "train"]
    stats = pool_stats(train or [r["stats"] for _, r in results])
    card = DatasetCard(
        kind=recipe.kind,
        task=spec.task,
        fields=_fields(results, manifest + window_rows),
        label_names=spec.names,
        target_name=spec.target_col,
        counts=count_splits(manifest, spec.names),
        folds=o.folds if o.folds > 1 else 0,
        channel_names=list(recipe.channel_names),
        crop_size=list(window.size) if window is not None and window.kind == "crop" else None,
        shards=shards,
        stats=stats,
        channels=len(stats.mean) if stats else None,
        rejected=len(rejected),
        sources=recipe.sources,
        options=recipe.identity,
        command=recipe.command,
        fingerprint=print_,
        created_by=f"medshard {__version__}",
    )
    return write_card(staging, card)


def _errors():
    from rich.console import Console

    return Console(stderr=True)


def _star_read_jobs(item: tuple) -> list[dict]:
    return _read_jobs(*item)


def _assign_splits(jobs: list[Job], spec: LabelSpec, o: IngestOptions) -> tuple[list, list]:
    if all(job.split for job in jobs):
        return [job.split for job in jobs], [job.fold for job in jobs]
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


def _manifest_row(job: Job, record: dict, split: str, fold: int) -> dict:
    return {
        "key": job.key,
        "split": split,
        "fold": int(fold),
        "subject": job.group,
        "label": job.parsed.get("label"),
        "labels": job.parsed.get("labels"),
        "target": job.parsed.get("target"),
        "source": record["source"],
        "source_sha256": record["source_sha256"],
        "shape": record["shape"],
        "dtype": record["dtype"],
        "spacing": record["spacing"],
        "fps": record.get("fps"),
        "timestamps": record.get("timestamps"),
        "shard": None,
        "offset": None,
        "members": None,
        "zarr_path": record.get("zarr_path"),
        "bytes": record["bytes"],
        "sample_sha256": None,  # set when the sample is written to a shard
    }


def _write_sample_shards(
    client, dataset_dir: Path, stored: list[tuple[dict, dict]], label_names, o: IngestOptions
) -> list[ShardInfo]:
    """Samples kept as encoded bytes go into shards per split, in key order; each shard is
    one task. Fills in each manifest row's shard, offset and members."""
    tasks = []
    for split in sorted({row["split"] for row, _ in stored}):
        in_split = sorted((p for p in stored if p[0]["split"] == split), key=lambda p: p[0]["key"])
        specs = [_sample_spec(row, record, label_names) for row, record in in_split]
        for path, chunk in plan_shards(
            split,
            specs,
            sizes=[s.size for s in specs],
            max_bytes=o.shard_bytes,
            max_samples=o.shard_samples,
        ):
            tasks.append(ShardTask(str(dataset_dir), split, path, tuple(chunk)))
    written = run_tasks(client, write_shard, tasks, description="write shards", quiet=o.quiet)
    rows = {row["key"]: row for row, _ in stored}
    for summary, placed in written:
        for key, offset, nbytes, fields, digest in placed:
            rows[key].update(
                shard=summary.path,
                offset=offset,
                members=fields,
                bytes=nbytes,
                sample_sha256=digest,
            )
    return [
        ShardInfo(path=s.path, split=t.split, samples=s.samples, bytes=s.bytes, sha256=s.sha256)
        for t, (s, _) in zip(tasks, written)
    ]


def _sample_spec(row: dict, record: dict, label_names) -> SampleSpec:
    """The tar members of one stored sample: its bytes unchanged, then the labels."""
    labels, about = label_members(row, label_names)
    about |= {"key": row["key"], "subject": row["subject"], "source": row["source"][0]}
    small = [*labels, json_member(about)]
    members = [record["member"], *record["extra"], *small]
    size = record["bytes"] + record["extra_bytes"] + sum(len(data) for _, data in small)
    return SampleSpec(key=row["key"], members=tuple(members), size=size)


def _fields(results: list[tuple[Job, dict]], rows: list[dict]) -> list[str]:
    """Zarr arrays first, then shard members with the image first."""
    arrays = [] if all("member" in r for _, r in results) else ["image"]
    if any(r.get("masked") for _, r in results):
        arrays.append("mask")
    members = {f for row in rows for f in row["members"] or ()}
    return arrays + sorted(members, key=lambda f: (not f.startswith("image."), f))
