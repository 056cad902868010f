"""`render_sheet`: a contact sheet of a dataset's samples, as stored or as the loader
yields them for training, drawn reproducibly from a seed and saved as PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medshard.errors import DatasetError
from medshard.shards.reader import Dataset, open_dataset

__all__ = ["MAX_SHOW", "Sheet", "render_sheet"]

MAX_SHOW = 64  # samples on one sheet: more would not be readable


@dataclass(frozen=True)
class Sheet:
    """What was drawn: the PNG, the keys shown in order, and its size in pixels."""

    path: Path
    keys: tuple[str, ...]
    width: int
    height: int


def _check_out(dataset: Dataset, out: Path) -> None:
    if out.suffix.lower() != ".png":
        raise DatasetError(f"{out}: a sheet is saved as PNG; give a file name ending in .png")
    if out.resolve().is_relative_to(dataset.path.resolve()):
        raise DatasetError(
            f"{out}: a sheet is not written inside the dataset {dataset.path}, whose "
            "files are all checksummed in its card"
        )
    if out.is_dir():
        raise DatasetError(f"{out}: is a folder; give the sheet's file name")
    from medshard.sheets.figure import is_sheet

    if out.exists() and not is_sheet(out):
        raise DatasetError(
            f"{out}: the file exists and is not a medshard sheet, so it is never written over; "
            "give a new file name"
        )


def _augment(dataset: Dataset, augment: Any):
    """An Augment2D or Augment3D for the dataset's kind, from one or from its fields."""
    from medshard.loaders import Augment2D, Augment3D

    if augment is None or isinstance(augment, (Augment2D, Augment3D)):
        return augment
    kind = Augment3D if dataset.card.kind == "volumes" else Augment2D
    try:
        return kind(**augment)
    except ValueError as exc:
        first = str(exc).splitlines()
        raise DatasetError(
            f"{dataset.path}: the augmentation does not fit {kind.__name__} "
            f"({first[1] if len(first) > 1 else first[0]}: {first[-1].strip()})"
        ) from None


def _loader_defaults(dataset: Dataset) -> dict:
    """Without a training config: patches and clips of the sizes recorded at ingest."""
    options = dataset.card.options
    if dataset.card.kind == "volumes" and options.get("patch_size"):
        return {"patch_size": tuple(options["patch_size"])}
    if dataset.card.kind == "video" and options.get("clip_len"):
        return {"clip_len": int(options["clip_len"])}
    return {}


def render_sheet(
    dataset: str | Path | Dataset,
    out: str | Path,
    *,
    show: int = 8,
    split: str | None = None,
    keys: tuple[str, ...] = (),
    seed: int = 0,
    loader: bool = False,
    augment: Any = None,
    loader_options: dict | None = None,
) -> Sheet:
    """Draw `show` samples of `split` (every split when None) by `seed`, or the samples
    named in `keys`, as stored; with `loader`, the first samples that the training loader
    yields for `split` (default 'train') with `augment` (an Augment2D/3D or its fields;
    default: normalisation only) and `loader_options` (build_loader keywords such as
    patch_size or clip_len; default: the sizes recorded at ingest)."""
    from medshard.sheets.batches import loader_tiles
    from medshard.sheets.figure import render_tiles
    from medshard.sheets.stored import pick_rows, stored_tiles

    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    out = Path(out)
    if not 1 <= show <= MAX_SHOW:
        raise DatasetError(f"{ds.path}: a sheet shows 1 to {MAX_SHOW} samples, not {show}")
    if loader and keys:
        raise DatasetError(
            f"{ds.path}: named keys show stored samples, while the loader draws its own "
            "by the seed; ask for one or the other"
        )
    _check_out(ds, out)
    if loader:
        split = split or "train"
        ds.require_split(split)
        options = _loader_defaults(ds) if loader_options is None else loader_options
        chosen = _augment(ds, augment)
        tiles = loader_tiles(ds, split, show, seed, augment=chosen, options=options)
        how = "normalisation only" if chosen is None else "training augmentation"
        what = f"as the loader yields them ({split}, {how})"
    else:
        rows = pick_rows(ds, show, split, tuple(keys), seed)
        tiles = stored_tiles(ds, rows)
        what = f"as stored ({split or 'all splits'})"
    count = f"{len(tiles)} sample{'s' if len(tiles) != 1 else ''}"
    title = f"{ds.path.name} ({ds.card.kind}): {count} {what}, seed {seed}"
    width, height = render_tiles(tiles, out, title)
    return Sheet(
        path=out,
        keys=tuple(t.key for t in tiles),
        width=width,
        height=height,
    )
