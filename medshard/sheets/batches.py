"""Tiles of what the loader yields: samples as training sees them, after augmentation and
normalisation (2D images, volume patches or crops with their masks, clips)."""

from __future__ import annotations

import numpy as np

from medshard.errors import DatasetError
from medshard.shards.reader import Dataset
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

__all__ = ["loader_tiles"]


def _numpy(value):
    """A tensor's values as a numpy array; anything else as it is."""
    return value.numpy() if hasattr(value, "numpy") else value


def _draw(dataset: Dataset, split: str, show: int, seed: int, **options) -> list[dict]:
    """`show` samples (fewer when the split holds fewer) of one training epoch, one dict
    of numpy arrays and labels each."""
    from medshard.loaders import build_loader

    loader = build_loader(
        dataset,
        split,
        batch_size=show,
        seed=seed,
        training=True,
        num_workers=0,
        backend="torch",
        device="cpu",
        rank=0,
        world_size=1,
        **options,
    )
    samples: list[dict] = []
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            samples.append({"key": key} | {n: _numpy(v[i]) for n, v in batch.items() if n != "key"})
        if len(samples) >= show:
            break
    return samples[:show]


def _base_row(rows: dict[str, dict], key: str) -> dict:
    """The manifest row a loader key comes from ('KEY#3' is the 4th patch or clip of KEY)."""
    return rows.get(key) or rows[key.split("#", 1)[0]]


def _anatomical(dataset: Dataset, rows: dict[str, dict]) -> bool:
    """Whether the dataset's volumes have RAS+ axes (NIfTI ingests) rather than a
    microscope's (TIFF), from the attributes of its first stored volume."""
    import zarr

    zarr_rows = [r for r in rows.values() if r["zarr_path"] is not None]
    if not zarr_rows:
        return False
    dataset.prefetch([zarr_rows[0]["key"]])  # a dataset at a URL: into its cache first
    group = zarr.open_group(str(dataset.path / zarr_rows[0]["zarr_path"]), mode="r")
    return group.attrs.get("medshard", {}).get("axis_codes") == ["R", "A", "S"]


def loader_tiles(
    dataset: Dataset,
    split: str,
    show: int,
    seed: int,
    *,
    augment=None,
    options: dict | None = None,
) -> list[Tile]:
    """One tile per sample of the first batches that `build_loader` yields for training
    with `augment` (None: normalisation only) and `options` (build_loader keywords such
    as patch_size or clip_len; without them, the stored crops and clips)."""
    card = dataset.card
    samples = _draw(dataset, split, show, seed, augment=augment, **(options or {}))
    if not samples:
        raise DatasetError(f"{dataset.path}: the loader yields no samples of split {split!r}")
    rows = {r["key"]: r for r in dataset.manifest.to_pylist()}

    def text(sample: dict) -> str:
        labels = {n: sample.get(n) for n in ("label", "labels", "target")}
        return caption(sample["key"], card.label_names, card.target_name, **labels)

    # one window for the whole batch, so that samples compare as the model compares them
    images = np.stack([s["image"] for s in samples]) if card.kind != "volumes" else None
    window = display_window(images) if images is not None else None
    tiles = []
    if card.kind == "images":
        for s in samples:
            panel = image_panel(np.moveaxis(s["image"], 0, -1), "loader output", window)
            tiles.append(Tile(caption=text(s), rows=((panel,),)))
    elif card.kind == "volumes":
        anatomical = _anatomical(dataset, rows)
        channels = samples[0]["image"].shape[0]
        windows = [
            display_window(np.concatenate([s["image"][c].ravel() for s in samples]))
            for c in range(channels)
        ]
        for s in samples:
            row = _base_row(rows, s["key"])
            mask = s.get("mask")
            foreground = None if mask is None else mask > 0
            tiles.append(
                volume_tile(
                    s["image"],
                    mask,
                    spacing=tuple(row["spacing"]) if row["spacing"] else None,
                    centre=orthogonal_centre(s["image"].shape[1:], foreground),
                    channel_names=card.channel_names,
                    anatomical=anatomical,
                    text=text(s),
                    windows=windows,
                )
            )
    else:
        for s in samples:
            row = _base_row(rows, s["key"])
            clip = np.moveaxis(s["image"], 1, -1)  # (T, C, H, W) -> (T, H, W, C)
            indices = frame_indices(clip.shape[0], FRAMES)
            start = int(s["start"]) if "start" in s else None
            stamps = row["timestamps"]
            if start is not None and stamps:
                titles = [f"{stamps[start + i]:.2f} s" for i in indices]
            else:
                titles = [f"frame {i}" for i in indices]
            tiles.append(frames_tile(clip, indices, titles, text(s), window))
    return tiles
