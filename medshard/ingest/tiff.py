"""`medshard ingest tiff`: one folder per sample with one TIFF per z-slice
(`0001/raw/*.tif`, optional `0001/mask/*.tif`), or one multi-page TIFF per sample,
with an optional class CSV (sample id -> class), into Zarr v3."""

from __future__ import annotations

from pathlib import Path

from natsort import natsorted

from medshard.errors import BadInputError
from medshard.ingest.options import VolumeIngestOptions
from medshard.ingest.pipeline import Job, LoadedVolume, Recipe, run_ingest
from medshard.ingest.result import IngestResult
from medshard.ingest.table import (
    LabelSpec,
    check_key,
    read_table,
    refusal,
    require_columns,
    row_source,
)
from medshard.ingest.volume_read import TIFF_SUFFIXES, read_tiff_stack
from medshard.ingest.windows import WindowSpec
from medshard.shards.layout import key_from_path

__all__ = ["TiffIngestOptions", "ingest_tiff", "load_tiff_sample"]


class TiffIngestOptions(VolumeIngestOptions):
    root: Path
    labels: Path | None = None  # CSV: sample id -> class
    id_col: str | None = None  # default: the CSV's first column
    label_col: str | None = None  # default: the CSV's second column
    classes: tuple[str, ...] = ()


def load_tiff_sample(image: str, mask: str | None) -> LoadedVolume:
    """Read a sample's stack (and mask stack) with tifffile; spacing from its metadata."""
    try:
        stack, spacing, files = read_tiff_stack(Path(image))
    except ValueError as exc:
        raise BadInputError(image, str(exc)) from exc
    except Exception as exc:  # tifffile raises its own errors for a corrupt file
        raise BadInputError(
            image, f"cannot read the TIFF, it is truncated or corrupt ({exc})"
        ) from exc
    sources = [(image, files)]
    mask_stack = None
    if mask is not None:
        try:
            mask_stack, _, mask_files = read_tiff_stack(Path(mask))
        except Exception as exc:
            raise BadInputError(mask, f"cannot read the mask: {exc}") from exc
        sources.append((mask, mask_files))
    return LoadedVolume(
        image=stack[None],
        mask=mask_stack,
        spacing=spacing or (1.0, 1.0, 1.0),
        unit="micrometer",
        sources=sources,
        attributes={"channel_names": ["raw"]},
    )


def _discover(root: Path) -> tuple[list[tuple[str, str, str | None]], list[dict]]:
    """(key, image source, mask source) per sample under `root`, and refusals."""
    if not root.is_dir():
        raise BadInputError(str(root), "the folder does not exist")
    found, refused = [], []
    for entry in natsorted(root.iterdir(), key=str):
        if entry.is_dir():
            raw = entry / "raw"
            if not raw.is_dir():
                refused.append(refusal(None, str(entry), entry.name, "has no raw/ slice folder"))
                continue
            mask = entry / "mask"
            found.append((entry.name, str(raw), str(mask) if mask.is_dir() else None))
        elif entry.suffix.lower() in TIFF_SUFFIXES:
            found.append((key_from_path(entry.name), str(entry), None))
    if not found and not refused:
        raise BadInputError(str(root), "holds no sample folders (ID/raw/*.tif) or TIFF stacks")
    return found, refused


def ingest_tiff(options: TiffIngestOptions, command: str = "") -> IngestResult:
    """Ingest TIFF stacks under `options.root` into a volume dataset at `options.out`."""
    o = options
    samples, rejected = _discover(o.root)
    labels: dict[str, tuple[int, str]] = {}
    spec = LabelSpec()
    inputs = []
    if o.labels is not None:
        rows = read_table(o.labels)
        columns = list(rows[0])
        id_col, label_col = o.id_col or columns[0], o.label_col or columns[min(1, len(columns) - 1)]
        require_columns(o.labels, rows, [id_col, label_col])
        spec = LabelSpec(label_col=label_col, classes=tuple(o.classes)).with_classes_from(rows)
        labels = {r[id_col]: (i, r) for i, r in enumerate(rows)}
        inputs.append(o.labels)
    present = {key for key, _, _ in samples} | {r["key"] for r in rejected}
    for sample_id, (i, _) in labels.items():
        if sample_id not in present:
            reason = f"sample {sample_id!r} has no folder or stack under {o.root}"
            rejected.append(refusal(i, row_source(o.labels, i), sample_id, reason))
    jobs = []
    for key, image, mask in samples:
        where = str(Path(image).parent if mask or Path(image).name == "raw" else image)
        try:
            check_key(key)
            parsed = {}
            if o.labels is not None:
                if key not in labels:
                    raise ValueError(f"the sample has no row in {o.labels}")
                parsed = spec.parse(labels[key][1])
        except ValueError as exc:
            rejected.append(refusal(labels.get(key, (None,))[0], where, key, str(exc)))
            continue
        row = labels[key][0] if key in labels else -1
        jobs.append(
            Job(
                row=row,
                key=key,
                source=where,
                group=key,
                split=None,
                parsed=parsed,
                files=(image,) if mask is None else (image, mask),
                read=load_tiff_sample,
                args=(image, mask),
            )
        )
    recipe = Recipe(
        spec=spec,
        kind="volumes",
        identity={**o.identity(), "root": str(o.root.resolve()), "listing": sorted(present)},
        tables=tuple(inputs),
        sources={"root": str(o.root.resolve())},
        command=command,
        channel_names=("raw",),
        window=WindowSpec("crop", tuple(o.crops)) if o.crops else None,
        layout=o.layout(),
        spacing=o.spacing,
    )
    return run_ingest(jobs, rejected, recipe, o)
