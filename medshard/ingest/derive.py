"""`medshard derive DATASET --train-size 256`: give an existing image dataset its training
copies. Every sample is read back from its shard, checked, decoded once and copied; keys,
splits, folds, labels and the original bytes stay as they were. The new dataset is built
in staging and swapped in whole, like any ingest."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

from pydantic import Field

from medshard.errors import BadInputError, DatasetError
from medshard.ingest.image_probe import MAX_PIXELS, probe_bytes
from medshard.ingest.options import IngestOptions
from medshard.ingest.pipeline import EncodedImage, Job, Recipe, run_ingest
from medshard.ingest.result import IngestResult
from medshard.ingest.table import LabelSpec
from medshard.ingest.train_copy import CopySize, TrainCopy, TrainFormat, encode_copy, make_copy
from medshard.shards.manifest import read_rejected
from medshard.shards.random_access import ShardFiles
from medshard.shards.reader import open_dataset

__all__ = ["DeriveOptions", "derive_training_copies", "read_stored_image"]


class DeriveOptions(IngestOptions):
    """`medshard derive`: the dataset at `out` gets training copies of this size and kind."""

    train_size: CopySize
    train_format: TrainFormat = "raw"
    train_quality: int = Field(90, ge=1, le=100)
    max_pixels: int = Field(MAX_PIXELS, gt=0)
    # A sample whose copy cannot be made stops the run: the dataset never loses a sample.
    on_error: Literal["fail"] = "fail"
    overwrite: bool = True  # the dataset replaces itself, once the new one is complete

    def inputs(self) -> list[Path]:
        # The dataset is read while its successor is staged beside it, and replaced only
        # when that one is complete: it is the one input --out may be.
        return []

    @property
    def train_copy(self) -> TrainCopy:
        return TrainCopy(size=self.train_size, format=self.train_format, quality=self.train_quality)


def read_stored_image(
    dataset: str, row: dict, max_pixels: int, train_copy: TrainCopy
) -> EncodedImage:
    """Dask task: one sample's image bytes from its shard (checksum checked), decoded once
    and copied."""
    with contextlib.closing(ShardFiles(dataset)) as files:
        sample = files.read(
            row["shard"], row["offset"], row["bytes"], row["key"], row.get("sample_sha256")
        )
    field = next(name for name in sample if str(name).startswith("image."))
    data = sample[field]
    ext = field.split(".", 1)[1]
    try:
        info = probe_bytes(data, ext, max_pixels)
        copy = encode_copy(make_copy(info.pixels, train_copy), train_copy)
    except ValueError as exc:
        raise BadInputError(f"{dataset}/{row['shard']}: sample {row['key']!r}", str(exc)) from exc
    return EncodedImage(
        path=None,
        source=row["source"][0],
        ext=ext,
        sha256=row["source_sha256"][0],
        nbytes=len(data),
        shape=info.shape,
        dtype=info.dtype,
        stats=info.stats,
        extra=((train_copy.field, copy),),
        data=data,
    )


def _label_spec(card) -> LabelSpec:
    names = tuple(card.label_names)
    if card.task == "classification":
        return LabelSpec(label_col="label", classes=names)
    if card.task == "multilabel":
        return LabelSpec(label_cols=names)
    if card.task == "regression":
        return LabelSpec(target_col=card.target_name or "target")
    return LabelSpec()


def derive_training_copies(options: DeriveOptions, command: str = "") -> IngestResult:
    """Rebuild the image dataset at `options.out` with a training copy per sample."""
    o = options
    ds = open_dataset(o.out)
    if ds.mirror is not None:
        raise DatasetError(
            f"{ds.location}: derive changes a dataset in place; derive a local copy, then "
            "ingest it to the URL"
        )
    if ds.card.kind != "images":
        raise DatasetError(f"{o.out}: training copies are made of 2D images, not {ds.card.kind}")
    copies = {
        "train_size": list(o.train_size),
        "train_format": o.train_format,
        "train_quality": o.train_quality,
    }
    if all(ds.card.options.get(name) == value for name, value in copies.items()):
        return IngestResult.unchanged(o.out)
    kept = {k: ds.card.options[k] for k in ("shard_bytes", "shard_samples") if k in ds.card.options}
    o = o.model_copy(update={"folds": ds.card.folds, **kept})
    jobs = [
        Job(
            row=-1,
            key=row["key"],
            source=f"{o.out}/{row['shard']}: sample {row['key']!r}",
            group=row["subject"],
            split=row["split"],
            parsed={n: row[n] for n in ("label", "labels", "target") if row[n] is not None},
            files=(),
            read=read_stored_image,
            args=(str(o.out), row, o.max_pixels, o.train_copy),
            fold=row["fold"],
        )
        for row in ds.manifest.to_pylist()
    ]
    identity = {**ds.card.options, **copies, "derived_from": ds.card.fingerprint}
    refused = read_rejected(o.out).to_pylist() if ds.card.rejected else []
    recipe = Recipe(
        spec=_label_spec(ds.card),
        kind="images",
        identity=identity,
        tables=(),
        sources=ds.card.sources,
        command=f"{ds.card.command}; {command}" if ds.card.command else command,
        earlier_refusals=tuple(refused),
        jobs_per_task=32,
    )
    return run_ingest(jobs, [], recipe, o)
