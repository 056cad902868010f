"""What `medshard predict` reads: image files (one by one, or a folder of them) decoded by
ingest's own reader, NIfTI volumes reoriented by ingest's own reader, or the samples of a
dataset split; each input loads on its own, so that a bad one becomes a record with its
error instead of stopping the others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medshard.errors import MedshardError

__all__ = [
    "Input",
    "PredictInputError",
    "as_training_copy",
    "dataset_inputs",
    "file_inputs",
    "folder_inputs",
    "read_volume_files",
    "training_copy",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class PredictInputError(MedshardError, ValueError):
    """Inputs that `medshard predict` cannot start from."""


@dataclass(frozen=True)
class Input:
    """One thing to predict: its name in the output (a path or a sample key) and how to
    load it as a sample dict (`image`; labels and `source` space where known)."""

    name: str
    load: Callable[[], dict]


def training_copy(ds, original: bool):
    """How the training copies of image dataset `ds` were made (a TrainCopy), when a run
    with `loader.original` set to `original` read them; else None."""
    from medshard.ingest.train_copy import TrainCopy

    options = ds.card.options
    if original or ds.card.kind != "images" or not options.get("train_size"):
        return None
    return TrainCopy(
        size=tuple(options["train_size"]),
        format=options.get("train_format", "raw"),
        quality=options.get("train_quality", 90),
    )


def as_training_copy(image: np.ndarray, spec) -> np.ndarray:
    """A decoded (C, H, W) image as the loader would read its training copy: made as
    ingest makes it (resized once; re-encoded as JPEG or PNG when the copies are), then
    decoded."""
    from medshard.ingest.train_copy import encode_copy, make_copy
    from medshard.loaders.copies import PixelSource

    copy = make_copy(np.moveaxis(image, 0, -1), spec)
    if spec.format == "raw":
        return copy
    return np.array(
        PixelSource((spec.field,), True, {}).decode(spec.field, encode_copy(copy, spec))
    )


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_volume_files(paths: list[Path]) -> dict:
    """One subject's modalities (NIfTI files on one grid) as ingest stores them: (c, z, y,
    x) in the closest canonical (RAS+) orientation, with the source file's affine and
    shape, so that a prediction can be turned back into the source's space."""
    from medshard.ingest.volume_read import read_nifti_volume, same_grid

    channels, reference = [], None
    for path in paths:
        data, affine, original = read_nifti_volume(path, is_mask=False)
        if reference is None:
            reference = (data.shape, affine, original)
        elif not same_grid(affine, reference[1], data.shape, reference[0]):
            raise ValueError(
                f"{path}: its grid (shape {data.shape} and affine) differs from {paths[0]}'s; "
                "give modalities on one grid, as ingest --resample would store them"
            )
        channels.append(np.asarray(data, np.float32).transpose(2, 1, 0))
    return {
        "image": np.ascontiguousarray(np.stack(channels)),
        "space": np.asarray(reference[2]).tolist(),  # the source file's affine
    }


def _load_file(spec: str, paths: list[Path]) -> Callable[[], dict]:

    def load() -> dict:
        missing = [p for p in paths if not p.is_file()]
        if missing:  # the record names its input: a lone file need not be named again
            raise ValueError(f"{missing[0]}: not a file" if len(paths) > 1 else "not a file")
        if all(_is_nifti(p) for p in paths):
            return read_volume_files(paths)
        if len(paths) > 1:
            raise ValueError(f"{spec}: several files make one input only as NIfTI modalities")
        from medshard.ingest.image_probe import probe_image

        pixels = probe_image(paths[0]).pixels  # (H, W, C), as ingest decodes it
        return {"image": np.ascontiguousarray(np.moveaxis(pixels, -1, 0)), "original": True}

    return load


def file_inputs(specs: list[str]) -> list[Input]:
    """`--image PATH` given once or more; `a.nii.gz,b.nii.gz` is one subject's modalities."""
    return [Input(spec, _load_file(spec, [Path(p) for p in spec.split(",")])) for spec in specs]


def folder_inputs(folder: Path) -> list[Input]:
    """`--images-dir DIR`: every image or NIfTI file under it, in sorted order."""
    from medshard.codecs import IMAGE_EXTENSIONS

    if not folder.is_dir():
        raise PredictInputError(f"{folder}: not a folder")
    found = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix.lower() in IMAGE_EXTENSIONS or _is_nifti(p))
    )
    if not found:
        accepted = ", ".join(sorted({*IMAGE_EXTENSIONS, *NIFTI_SUFFIXES}))
        raise PredictInputError(f"{folder}: holds no image files ({accepted})")
    return [Input(str(p), _load_file(str(p), [p])) for p in found]  # commas in names too


def dataset_inputs(path: Path, split: str, whole_volumes: bool, copy=None) -> list[Input]:
    """The samples of `split` as the validation reads them (2D images, stored crops), or
    with `whole_volumes` each volume whole from Zarr, with its mask and source space.
    `copy` (a TrainCopy) is how the run's training copies were made: samples come from
    the dataset's own copies where they were made the same way, else from its originals
    (marked `original`, for the caller to copy)."""
    from medshard.loaders.copies import pixel_source
    from medshard.loaders.sources import Selection, ShardSamples
    from medshard.loaders.views import CopySamples
    from medshard.shards.reader import open_dataset

    ds = open_dataset(path)
    ds.require_split(split)
    if whole_volumes:
        rows = [r for r in ds.manifest.to_pylist() if r["split"] == split and r["zarr_path"]]
        if not rows:
            raise PredictInputError(f"{ds.path}: split {split!r} holds no volumes in Zarr")
        rows.sort(key=lambda r: r["key"])
        return [Input(r["key"], lambda row=r: _whole_volume(ds.path, row)) for r in rows]
    shards = ShardSamples(ds, Selection(split))
    if not len(shards):
        raise PredictInputError(f"{ds.path}: split {split!r} has no samples in shards")
    if ds.card.kind != "images":
        return [Input(shards.key(i), lambda i=i: shards.load(i, 0)) for i in range(len(shards))]
    same = copy is not None and training_copy(ds, False) == copy
    samples = CopySamples(shards, pixel_source(ds, shards.rows, original=not same))

    def load(index: int) -> dict:
        return samples.load(index, 0) | {"original": not same}

    return [Input(samples.key(i), lambda i=i: load(i)) for i in range(len(samples))]


def _whole_volume(root: Path, row: dict) -> dict:
    """A volume whole from Zarr: real values, its mask, and the source file's space."""
    import zarr

    from medshard.shards.zarr_store import open_sample

    image, mask = open_sample(root, row["zarr_path"])
    values = np.asarray(image[...], np.float32)
    scaled = image.attrs.get("medshard", {}).get("intensity")  # stored as scaled integers
    for channel, (scale, offset) in enumerate(
        zip(scaled["scale"], scaled["offset"]) if scaled else ()
    ):
        values[channel] = values[channel] * scale + offset
    attributes = zarr.open_group(str(Path(root) / row["zarr_path"]), mode="r").attrs
    medshard = dict(attributes.get("medshard", {}))
    sample = {"key": row["key"], "image": values, "spacing": row["spacing"]}
    sample |= {k: row[k] for k in ("label", "target") if row.get(k) is not None}
    if mask is not None:
        sample["mask"] = np.asarray(mask[...])
    if "original_affine" in medshard:
        sample["space"] = medshard["original_affine"]
    return sample
