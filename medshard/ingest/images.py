"""`medshard ingest images`: a CSV table of 2D images (PNG, JPEG, TIFF) with labels into
WebDataset shards. The encoded bytes are stored unchanged; the loaders decode them."""

from __future__ import annotations

from pydantic import Field

from medshard.errors import BadInputError
from medshard.ingest.image_probe import MAX_PIXELS, probe_image
from medshard.ingest.options import TableIngestOptions
from medshard.ingest.pipeline import EncodedImage, Job, Recipe, run_ingest
from medshard.ingest.result import IngestResult
from medshard.ingest.table import (
    LabelSpec,
    check_rows,
    read_table,
    require_columns,
    row_file,
    row_key,
)
from medshard.ingest.train_copy import CopySize, TrainCopy, TrainFormat, encode_copy, make_copy

__all__ = ["ImageIngestOptions", "ingest_images", "read_image"]

_IMAGES_PER_TASK = 32


class ImageIngestOptions(TableIngestOptions):
    """`medshard ingest images`: a table of 2D images and their labels."""

    image_col: str
    label_col: str | None = None
    label_cols: tuple[str, ...] = ()
    target_col: str | None = None
    classes: tuple[str, ...] = ()
    train_size: CopySize | None = None  # a training copy per image, of this size
    train_format: TrainFormat = "raw"
    train_quality: int = Field(90, ge=1, le=100)
    max_pixels: int = Field(MAX_PIXELS, gt=0)  # larger images are refused undecoded (bombs)

    @property
    def train_copy(self) -> TrainCopy | None:
        if self.train_size is None:
            return None
        return TrainCopy(size=self.train_size, format=self.train_format, quality=self.train_quality)


def read_image(
    path: str, source: str, max_pixels: int = MAX_PIXELS, train_copy: TrainCopy | None = None
) -> EncodedImage:
    """Read, checksum and fully decode one image (a refusal raises with the reason), and
    make its training copy when asked."""
    try:
        info = probe_image(path, max_pixels)
        extra = ()
        if train_copy is not None:
            copy = encode_copy(make_copy(info.pixels, train_copy), train_copy)
            extra = ((train_copy.field, copy),)
    except (ValueError, OSError) as exc:
        raise BadInputError(path, str(exc)) from exc
    return EncodedImage(
        path=path,
        source=source,
        ext=info.ext,
        sha256=info.sha256,
        nbytes=info.nbytes,
        shape=info.shape,
        dtype=info.dtype,
        stats=info.stats,
        extra=extra,
    )


def ingest_images(options: ImageIngestOptions, command: str = "") -> IngestResult:
    """Ingest an image table into a dataset at `options.out`; see ImageIngestOptions."""
    o = options
    spec = LabelSpec(o.label_col, tuple(o.label_cols), o.target_col, tuple(o.classes))
    rows = read_table(o.table)
    optional = [o.key_col, o.group_col, o.split_col]
    require_columns(o.table, rows, [o.image_col, *spec.columns, *[c for c in optional if c]])
    spec = spec.with_classes_from(rows)
    root = o.data_root

    def check(i: int, row: dict, where: str) -> Job:
        path = row_file(root, row, o.image_col, where, o.allow_outside_root)
        if not path.is_file():
            raise BadInputError(str(path), f"not a file ({where})")
        key = row_key(row, o.key_col, row[o.image_col])
        parsed = spec.parse(row)
        return Job(
            row=i,
            key=key,
            source=str(path),
            group=o.group_of(row, key),
            split=o.split_of(row),
            parsed=parsed,
            files=(str(path),),
            read=read_image,
            args=(str(path), row[o.image_col], o.max_pixels, o.train_copy),
        )

    jobs, rejected = check_rows(o.table, rows, check)
    recipe = Recipe(
        spec=spec,
        kind="images",
        identity=o.identity(),
        tables=(o.table,),
        sources=o.sources,
        command=command,
        jobs_per_task=_IMAGES_PER_TASK,
    )
    return run_ingest(jobs, rejected, recipe, o)
