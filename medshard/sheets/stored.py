"""Tiles of stored samples, as ingest wrote them: 2D images (with their training copy),
volumes and their masks, videos and clips, from shards or from the Zarr store."""

from __future__ import annotations

import io

import numpy as np

from medshard.codecs import decode_image
from medshard.errors import DatasetError
from medshard.shards.foreground import read_foreground
from medshard.shards.random_access import ShardFiles
from medshard.shards.reader import Dataset
from medshard.shards.zarr_store import open_sample
from medshard.sheets.tiles import (
    FRAMES,
    Tile,
    caption,
    display_window,
    frame_indices,
    frames_tile,
    image_panel,
    orthogonal_centre,
    volume_tile,
)

__all__ = ["pick_rows", "stored_tiles"]


def _is_whole(row: dict, kind: str) -> bool:
    """A whole image, volume or video (not one of the crops or clips cut from it)."""
    return kind == "images" or row["zarr_path"] is not None


def pick_rows(
    dataset: Dataset, show: int, split: str | None, keys: tuple[str, ...], seed: int
) -> list[dict]:
    """The manifest rows of `keys` (any stored sample, crops and clips included), else
    `show` whole samples drawn without replacement by `seed`, in manifest order."""
    if split is not None:
        dataset.require_split(split)
    rows = [r for r in dataset.manifest.to_pylist() if split is None or r["split"] == split]
    where = f" in split {split!r}" if split is not None else ""
    if keys:
        by_key = {r["key"]: r for r in rows}
        for key in keys:
            if key not in by_key:
                raise DatasetError(f"{dataset.path}: no sample {key!r}{where}")
        return [by_key[k] for k in keys]
    kind = dataset.card.kind
    whole = [r for r in rows if _is_whole(r, kind)] or rows
    if not whole:
        raise DatasetError(f"{dataset.path}: no samples{where} to show")
    chosen = np.random.default_rng(seed).choice(len(whole), min(show, len(whole)), replace=False)
    return [whole[i] for i in sorted(chosen)]


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class _Reader:
    """Reads the members of shard rows and the arrays of Zarr rows of one dataset."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.files = ShardFiles(dataset.path)

    def members(self, row: dict) -> dict:
        return self.files.read(
            row["shard"], row["offset"], row["bytes"], row["key"], row["sample_sha256"]
        )

    def arrays(self, row: dict):
        """(image, mask or None): lazy zarr arrays, or arrays from `.npy` members."""
        if row["zarr_path"] is not None:
            self.dataset.prefetch([row["key"]])  # a dataset at a URL: into its cache first
            return open_sample(self.dataset.path, row["zarr_path"])
        sample = self.members(row)
        mask = sample.get("mask.npy")
        return _npy(sample["image.npy"]), None if mask is None else _npy(mask)


def _label_text(dataset: Dataset, row: dict) -> str:
    card = dataset.card
    return caption(
        row["key"],
        card.label_names,
        card.target_name,
        label=row["label"],
        labels=row["labels"],
        target=row["target"],
    )


def _hwc(array: np.ndarray, shape: list[int]) -> np.ndarray:
    """A decoded or `.npy` 2D image as (H, W[, C]), whichever axis holds its channels."""
    if array.ndim == 3 and array.shape[0] == shape[0] and array.shape[1:] == tuple(shape[1:]):
        return np.moveaxis(array, 0, -1)
    return array


def _image_tile(reader: _Reader, row: dict) -> Tile:
    sample = reader.members(row)
    stored = next(f for f in sample if f.startswith("image."))
    image = _hwc(decode_image(sample[stored], stored.split(".", 1)[1]), row["shape"])
    window = display_window(image)
    panels = [image_panel(image, f"stored .{stored.split('.', 1)[1]}", window)]
    copy_field = next((f for f in sample if f.startswith("train.")), None)
    if copy_field is not None:
        ext = copy_field.split(".", 1)[1]
        data = sample[copy_field]
        copy = _npy(data) if ext == "npy" else decode_image(data, ext)
        copy = np.moveaxis(copy, 0, -1) if ext == "npy" else copy  # .npy copies are (C, H, W)
        size = "x".join(str(n) for n in copy.shape[:2])
        same_type = copy.dtype == image.dtype
        panels.append(image_panel(copy, f"training copy {size}", window if same_type else None))
    return Tile(caption=_label_text(reader.dataset, row), rows=(tuple(panels),))


def _volume_tile(reader: _Reader, row: dict, foreground: dict) -> Tile:
    image, mask = reader.arrays(row)
    shape = tuple(image.shape[1:])
    coords = foreground.get(row["key"])
    points = np.concatenate(list(coords.values())) if coords else None
    if points is None and mask is not None and row["zarr_path"] is None:
        points = np.asarray(mask) > 0  # a stored crop, whose mask is already in memory
    anatomical, intensity = False, None
    if row["zarr_path"] is not None:
        import zarr

        group = zarr.open_group(str(reader.dataset.path / row["zarr_path"]), mode="r")
        anatomical = group.attrs.get("medshard", {}).get("axis_codes") == ["R", "A", "S"]
        intensity = image.attrs.get("medshard", {}).get("intensity")  # int16 codes
    return volume_tile(
        image,
        mask,
        spacing=tuple(row["spacing"]) if row["spacing"] else None,
        centre=orthogonal_centre(shape, points),
        channel_names=reader.dataset.card.channel_names,
        anatomical=anatomical,
        text=_label_text(reader.dataset, row),
        intensity=intensity,
    )


def _video_tile(reader: _Reader, row: dict) -> Tile:
    frames, _ = reader.arrays(row)
    if row["zarr_path"] is None:
        frames = np.moveaxis(np.asarray(frames), 1, -1)  # stored clips are (T, C, H, W)
    indices = frame_indices(frames.shape[0], FRAMES)
    stamps = row["timestamps"]
    if stamps and row["fps"]:
        titles = [f"{stamps[i]:.2f} s" for i in indices]
    elif row["fps"]:
        titles = [f"+{i / row['fps']:.2f} s" for i in indices]  # within a stored clip
    else:
        titles = [f"frame {i}" for i in indices]
    return frames_tile(frames, indices, titles, _label_text(reader.dataset, row))


def stored_tiles(dataset: Dataset, rows: list[dict]) -> list[Tile]:
    """One tile per manifest row, read from the dataset's shards or Zarr store."""
    reader = _Reader(dataset)
    kind = dataset.card.kind
    try:
        if kind == "images":
            return [_image_tile(reader, r) for r in rows]
        if kind == "volumes":
            foreground = read_foreground(dataset.path)
            return [_volume_tile(reader, r, foreground) for r in rows]
        return [_video_tile(reader, r) for r in rows]
    finally:
        reader.files.close()
