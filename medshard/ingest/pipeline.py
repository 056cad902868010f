"""The one ingest pipeline. A source format (images.py, tiff.py, nifti.py, video.py) turns
table rows or folders into jobs, one per sample, and reads a job into an EncodedImage or a
LoadedVolume; this module does the rest for every format: Dask tasks that read and check
each sample (writing arrays to Zarr as they go), splits, shards, manifest, card, commit."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from medshard import __version__
from medshard.errors import BadInputError
from medshard.ingest.build import write_sample_shards
from medshard.ingest.cluster import dask_client, run_tasks
from medshard.ingest.fingerprint import fingerprint
from medshard.ingest.options import IngestOptions
from medshard.ingest.output import claim_output
from medshard.ingest.output import stale as is_stale
from medshard.ingest.result import IngestResult, count_splits
from medshard.ingest.samples import SCRATCH, EncodedImage, Job, LoadedVolume, read_jobs
from medshard.ingest.splits import make_splits, quantile_strata
from medshard.ingest.stats import pool_stats
from medshard.ingest.table import LabelSpec, refusal
from medshard.ingest.windows import WindowSpec, write_window_shards
from medshard.shards.card import DatasetCard, write_card
from medshard.shards.foreground import write_foreground
from medshard.shards.manifest import write_manifest, write_rejected
from medshard.shards.tar_writer import MAX_KEY_LENGTH
from medshard.shards.zarr_layout import ZarrLayout
from medshard.shards.zarr_store import consolidate, create_store

__all__ = ["EncodedImage", "Job", "LoadedVolume", "Recipe", "run_ingest"]


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
                if taken.row >= 0 and job.row >= 0 and taken.row != job.row
                else f"key {job.key!r} is also the key of {taken.source}; rename one of them"
            )
            row = job.row if job.row >= 0 else None
            rejected.append(refusal(row, job.source, job.key, reason))
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
    layout: ZarrLayout | None = None  # of stored arrays: chunks sized for a patch, codec
    spacing: tuple[float, ...] | None = None  # overrides the files' own
    jobs_per_task: int = 1
    earlier_refusals: tuple[dict, ...] = ()  # kept in rejected.parquet (a rebuilt dataset)


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
        if claim.check(print_, o.overwrite or stale):  # the claim has guarded the inputs
            return IngestResult.unchanged(o.out)
        if stale and not o.overwrite:
            _errors().print(f"{claim.name}: its inputs changed since it was built; rebuilding it")
        with dask_client(o.workers, o.scheduler, o.processes) as client, claim.staging() as staging:
            results = _read_samples(client, jobs, rejected, staging.dir, recipe, o)
            card = _write_dataset(client, staging.dir, results, rejected, recipe, o, print_)
            built = sum(p.stat().st_size for p in staging.dir.rglob("*") if p.is_file())
            staging.commit()
    source_bytes = sum(r["source_bytes"] for _, r in results)
    frames = sum(r["shape"][0] for _, r in results) if recipe.kind == "video" else 0
    seconds = time.perf_counter() - started
    return IngestResult.from_card(o.out, card, seconds, source_bytes, frames, built)


def _read_samples(
    client, jobs: list[Job], rejected: list[dict], staging: Path, recipe: Recipe, o
) -> list[tuple[Job, dict]]:
    """Run every job's reader on the cluster; (job, record) of each sample that passed."""
    if recipe.kind != "images":
        create_store(staging)
    step = recipe.jobs_per_task
    items = [
        (jobs[s : s + step], str(staging), recipe.layout, recipe.spacing)
        for s in range(0, len(jobs), step)
    ]
    description = {"images": "decode", "video": "videos"}.get(recipe.kind, "volumes")
    chunks = run_tasks(client, _star_read_jobs, items, description=description, quiet=o.quiet)
    results = []
    for job, record in zip(jobs, [record for chunk in chunks for record in chunk]):
        if "refused" in record:
            row = job.row if job.row >= 0 else None
            rejected.append(refusal(row, record["source"], job.key, record["refused"]))
        else:
            if "zarr_path" in record:
                root = recipe.sources.get("root")
                record["source"] = [_relative(name, root) for name in record["source"]]
            results.append((job, record))
    if recipe.window is not None:
        results = _refuse_window_keys(results, recipe.window, staging, rejected)
    results = _refuse_missing_masks(results, staging, rejected)
    rejected.sort(key=_rejected_order)
    _stop_at_first(rejected, o.on_error)
    if not results:
        where = str(recipe.tables[0]) if recipe.tables else str(recipe.sources.get("root", o.out))
        raise BadInputError(where, f"no sample could be ingested ({len(rejected)} refused)")
    return results


def _relative(name: str, root: str | None) -> str:
    """A source as the manifest names it: relative to the data root, as image tables give
    it, so that the dataset's sources are found from any working directory; a source
    outside the root keeps its absolute path."""
    path = os.path.abspath(name)
    if root is None:
        return path
    relative = os.path.relpath(path, os.path.abspath(root))
    return path if relative.startswith("..") else relative


def _refuse_window_keys(
    results: list[tuple[Job, dict]], window: WindowSpec, staging: Path, rejected: list[dict]
) -> list[tuple[Job, dict]]:
    """Crop and clip keys (`KEY_z0_y0_x0`, `KEY_t8`) must be valid and unique beside every
    sample key: a sample whose windows are not is refused, its stored arrays removed."""
    taken = {job.key for job, _ in results}
    kept = []
    for job, record in results:
        keys = [window.key(job.key, origin) for origin in window.windows(record["shape"])]
        long = next((k for k in keys if len(k) > MAX_KEY_LENGTH), None)
        clash = next((k for k in keys if k in taken), None)
        if long is None and clash is None:
            taken.update(keys)
            kept.append((job, record))
            continue
        reason = (
            f"its {window.kind} key {long!r} is longer than {MAX_KEY_LENGTH} characters; "
            "give the sample a shorter key"
            if long is not None
            else f"its {window.kind} key {clash!r} is the key of another sample; rename one"
        )
        row = job.row if job.row >= 0 else None
        rejected.append(refusal(row, job.source, job.key, reason))
        shutil.rmtree(staging / record["zarr_path"])
    return kept


def _refuse_missing_masks(
    results: list[tuple[Job, dict]], staging: Path, rejected: list[dict]
) -> list[tuple[Job, dict]]:
    """A dataset has masks for every sample or for none: where some samples have one, a
    sample without is refused (a loader could give its batches no mask)."""
    if not any(record.get("masked") for _, record in results):
        return results
    kept = []
    for job, record in results:
        if "zarr_path" in record and not record.get("masked"):
            reason = "has no mask, while other samples of this dataset have one"
            rejected.append(refusal(job.row if job.row >= 0 else None, job.source, job.key, reason))
            shutil.rmtree(staging / record["zarr_path"])
        else:
            kept.append((job, record))
    return kept


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
    shards = write_sample_shards(
        client,
        staging,
        stored,
        spec.names,
        max_bytes=o.shard_bytes,
        max_samples=o.shard_samples,
        quiet=o.quiet,
    )
    shutil.rmtree(staging / SCRATCH, ignore_errors=True)
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
    rejected = [*recipe.earlier_refusals, *rejected]
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
    return read_jobs(*item)


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


def _fields(results: list[tuple[Job, dict]], rows: list[dict]) -> list[str]:
    """Zarr arrays first, then shard members with the image first."""
    arrays = [] if all("member" in r for _, r in results) else ["image"]
    if any(r.get("masked") for _, r in results):
        arrays.append("mask")
    members = {f for row in rows for f in row["members"] or ()}
    return arrays + sorted(members, key=lambda f: (not f.startswith("image."), f))
