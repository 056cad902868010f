"""Fixed, non-overlapping crops of stored volumes, written to WebDataset shards for pure
streaming (`KEY.image.npy`, `KEY.mask.npy`, labels, `KEY.json` with origin and source)."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass

import numpy as np

from medshard.shards.tar_writer import ShardSummary, TarShardWriter
from medshard.shards.zarr_store import open_sample

__all__ = ["CropTask", "crop_grid", "crop_key", "write_crops"]


def crop_grid(shape: list[int], crop: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Origins of the whole crops that tile `shape` from its corner; the rest is dropped."""
    return list(
        itertools.product(*[range(0, dim - size + 1, size) for dim, size in zip(shape, crop)])
    )


def crop_key(key: str, origin: tuple[int, ...]) -> str:
    return f"{key}_z{origin[0]}_y{origin[1]}_x{origin[2]}"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class CropTask:
    dataset_dir: str
    split: str
    path: str  # relative shard path
    volumes: tuple[dict, ...]  # manifest rows of the volumes whose crops go in this shard
    crop: tuple[int, int, int]
    label_names: tuple[str, ...]


def write_crops(task: CropTask) -> tuple[ShardSummary, list[dict]]:
    """Dask task: read each volume once, write all its crops; returns the shard summary and
    the crops' manifest rows."""
    rows = []
    with TarShardWriter(task.dataset_dir, task.path) as writer:
        for volume in task.volumes:
            image, mask = open_sample(task.dataset_dir, volume["zarr_path"])
            image, mask = image[...], (mask[...] if mask is not None else None)
            for origin in crop_grid(volume["shape"][1:], task.crop):
                window = tuple(slice(o, o + s) for o, s in zip(origin, task.crop))
                key = crop_key(volume["key"], origin)
                members = [("image.npy", _npy(image[(slice(None), *window)]))]
                if mask is not None:
                    members.append(("mask.npy", _npy(mask[window])))
                about = {
                    "key": key,
                    "source_key": volume["key"],
                    "origin": list(origin),
                    "size": list(task.crop),
                    "subject": volume["subject"],
                }
                if volume["label"] is not None:
                    members.append(("cls", str(volume["label"]).encode()))
                    about |= {
                        "label": volume["label"],
                        "label_name": task.label_names[volume["label"]],
                    }
                if volume["labels"] is not None:
                    members.append(("labels.npy", _npy(np.asarray(volume["labels"], np.uint8))))
                    about["labels"] = volume["labels"]
                if volume["target"] is not None:
                    members.append(("target.npy", _npy(np.asarray([volume["target"]], np.float32))))
                    about["target"] = volume["target"]
                members.append(("json", json.dumps(about, sort_keys=True).encode()))
                placed = writer.add(key, members)
                rows.append(
                    {
                        **volume,
                        "key": key,
                        "source": [volume["key"]],
                        "source_sha256": [volume["source_sha256"][0]],
                        "shape": [volume["shape"][0], *task.crop],
                        "shard": task.path,
                        "offset": placed.offset,
                        "members": [f for f, _ in members],
                        "zarr_path": None,
                        "bytes": placed.bytes,
                    }
                )
        summary = writer.close()
    return summary, rows
