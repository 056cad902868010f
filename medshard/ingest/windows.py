"""Fixed windows of stored samples written to WebDataset shards for pure streaming:
non-overlapping 3D crops of volumes, and clips of T frames of videos. Each shard is
written by one task that reads each of its samples once."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medshard.ingest.build import plan_shards, shard_info
from medshard.ingest.cluster import run_tasks
from medshard.ingest.members import json_member, label_members, npy_bytes
from medshard.shards.card import ShardInfo
from medshard.shards.tar_writer import ShardSummary, TarShardWriter
from medshard.shards.zarr_store import open_sample

__all__ = ["WindowSpec", "crop_origins", "clip_starts", "write_window_shards", "write_windows"]


def crop_origins(shape: Sequence[int], crop: Sequence[int]) -> list[tuple[int, ...]]:
    """Origins of the whole crops that tile a (z, y, x) `shape` from its corner."""
    return list(itertools.product(*[range(0, d - s + 1, s) for d, s in zip(shape, crop)]))


def clip_starts(frames: int, length: int, stride: int) -> list[int]:
    """First frames of the clips of `length` frames every `stride` frames."""
    return list(range(0, frames - length + 1, stride))


@dataclass(frozen=True)
class WindowSpec:
    kind: str  # "crop" or "clip"
    size: tuple[int, ...]  # crop (D, H, W), or (T,) for clips
    stride: int = 0  # clips only

    def windows(self, shape: Sequence[int]) -> list[tuple[int, ...]]:
        """Window origins in a stored sample of `shape` ((c, z, y, x) or (t, y, x[, c]))."""
        if self.kind == "crop":
            return crop_origins(shape[1:], self.size)
        return [(s,) for s in clip_starts(shape[0], self.size[0], self.stride)]

    def key(self, key: str, origin: tuple[int, ...]) -> str:
        if self.kind == "crop":
            return f"{key}_z{origin[0]}_y{origin[1]}_x{origin[2]}"
        return f"{key}_t{origin[0]}"

    def cut(self, image: np.ndarray, mask, origin: tuple[int, ...]):
        """(image window, mask window or None, what the window's JSON records)."""
        if self.kind == "crop":
            window = tuple(slice(o, o + s) for o, s in zip(origin, self.size))
            cut_mask = None if mask is None else mask[window]
            return (
                image[(slice(None), *window)],
                cut_mask,
                {"origin": list(origin), "size": list(self.size)},
            )
        start, stop = origin[0], origin[0] + self.size[0]
        clip = image[start:stop]
        clip = clip[:, None] if clip.ndim == 3 else np.moveaxis(clip, -1, 1)  # (T, C, H, W)
        return np.ascontiguousarray(clip), None, {"frames": [start, stop]}

    def window_shape(self, shape: Sequence[int]) -> list[int]:
        if self.kind == "crop":
            return [shape[0], *self.size]
        channels = shape[3] if len(shape) == 4 else 1
        return [self.size[0], channels, *shape[1:3]]


@dataclass(frozen=True)
class WindowTask:
    dataset_dir: str
    split: str
    path: str  # relative shard path
    samples: tuple[dict, ...]  # manifest rows of the samples whose windows go in this shard
    spec: WindowSpec
    label_names: tuple[str, ...]


def write_windows(task: WindowTask) -> tuple[ShardSummary, list[dict]]:
    """Dask task: read each sample once, write all its windows; returns the shard summary
    and the windows' manifest rows."""
    rows = []
    with TarShardWriter(task.dataset_dir, task.path) as writer:
        for sample in task.samples:
            image, mask = open_sample(task.dataset_dir, sample["zarr_path"])
            image, mask = image[...], (mask[...] if mask is not None else None)
            labels, about_labels = label_members(sample, task.label_names)
            for origin in task.spec.windows(sample["shape"]):
                key = task.spec.key(sample["key"], origin)
                window, window_mask, where = task.spec.cut(image, mask, origin)
                members = [("image.npy", npy_bytes(window))]
                if window_mask is not None:
                    members.append(("mask.npy", npy_bytes(window_mask)))
                about = {
                    "key": key,
                    "source_key": sample["key"],
                    "subject": sample["subject"],
                    **where,
                    **about_labels,
                }
                members += [*labels, json_member(about)]
                placed = writer.add(key, members)
                rows.append(
                    {
                        **sample,
                        "key": key,
                        "source": [sample["key"]],
                        "source_sha256": [sample["source_sha256"][0]],
                        "shape": list(window.shape),
                        "shard": task.path,
                        "offset": placed.offset,
                        "members": [f for f, _ in members],
                        "zarr_path": None,
                        "bytes": placed.bytes,
                        "sample_sha256": placed.sha256,
                        "timestamps": None,
                    }
                )
        summary = writer.close()
    return summary, rows


def write_window_shards(
    client,
    dataset_dir: Path,
    manifest: list[dict],
    spec: WindowSpec,
    label_names: Sequence[str],
    *,
    max_bytes: int,
    max_samples: int,
    quiet: bool,
) -> tuple[list[dict], list[ShardInfo]]:
    """Plan shards per split (a sample's windows stay in one shard) and write them."""
    tasks = []
    for split in sorted({row["split"] for row in manifest}):
        rows = sorted((r for r in manifest if r["split"] == split), key=lambda r: r["key"])
        rows = [r for r in rows if spec.windows(r["shape"])]
        counts = [len(spec.windows(r["shape"])) for r in rows]
        sizes = [
            n * int(np.prod(spec.window_shape(r["shape"]))) * np.dtype(r["dtype"]).itemsize
            for n, r in zip(counts, rows)
        ]
        for path, chunk in plan_shards(
            split, rows, sizes=sizes, counts=counts, max_bytes=max_bytes, max_samples=max_samples
        ):
            tasks.append(
                WindowTask(str(dataset_dir), split, path, tuple(chunk), spec, tuple(label_names))
            )
    written = run_tasks(client, write_windows, tasks, description=f"{spec.kind}s", quiet=quiet)
    rows = [row for _, placed in written for row in placed]
    shards = [shard_info(summary, task.split) for task, (summary, _) in zip(tasks, written)]
    return rows, shards
