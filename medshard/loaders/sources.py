"""Sample sources: index -> one decoded sample (numpy arrays, labels, key).

- `ShardSamples`: samples stored in WebDataset shards (2D images, volume crops, video
  clips), read by the offset and size the manifest gives, so any order costs no scan.
- `PatchSamples`: random 3D patches of the Zarr volumes, several per volume, uniform or
  centred on stored foreground locations.
- `ClipSamples`: clips of T frames of the Zarr videos, at random or sequential starts.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np

from medshard.codecs import decode_image
from medshard.errors import DatasetError
from medshard.loaders.columns import ZarrColumns
from medshard.loaders.fetching import fetched
from medshard.shards.foreground import read_foreground
from medshard.shards.random_access import ShardFiles, parse_sample
from medshard.shards.reader import Dataset
from medshard.shards.zarr_shards import RegionReader

__all__ = ["ShardSamples", "PatchSamples", "ClipSamples", "Selection", "PadMode", "label_fields"]

# How a patch larger than its volume is filled beyond the volume's edge (the mask always
# with 0): "minimum" (each channel's lowest value in the patch: the background of MRI and
# CT, where 0 would be bright tissue in CT or in z-scored data), "constant" (0), or
# "reflect" (mirrored at the edge).
PadMode = Literal["minimum", "constant", "reflect"]


@dataclass(frozen=True)
class Selection:
    """Which manifest rows a loader reads: a split, or with `fold` k a cross-validation
    role: 'val' is fold k, any other split name is every non-test row outside fold k."""

    split: str
    fold: int | None = None

    def __call__(self, row: dict) -> bool:
        if self.fold is None:
            return row["split"] == self.split
        if self.split == "val":
            return row["fold"] == self.fold
        return row["split"] != "test" and row["fold"] not in (-1, self.fold)


def label_fields(row: dict) -> dict:
    """The label outputs of a manifest row: label, labels and/or target."""
    out = {}
    if row.get("label") is not None:
        out["label"] = int(row["label"])
    if row.get("labels") is not None:
        out["labels"] = np.asarray(row["labels"], np.float32)
    if row.get("target") is not None:
        out["target"] = np.float32(row["target"])
    return out


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class ShardSamples:
    """Samples of one split stored in tar shards, in manifest order."""

    def __init__(self, dataset: Dataset, select: Selection):
        self.dataset = dataset
        rows = [r for r in dataset.manifest.to_pylist() if select(r) and r["shard"]]
        self.rows = sorted(rows, key=lambda r: (r["shard"], r["offset"]))
        self.files = ShardFiles(dataset.path)

    def __len__(self) -> int:
        return len(self.rows)

    def key(self, index: int) -> str:
        return self.rows[index]["key"]

    stored_key = key  # the manifest's key of the sample that item `index` reads

    def shards(self) -> np.ndarray:
        """The shard each item reads, numbered from 0 (a shuffle by shards' unit)."""
        names = [r["shard"] for r in self.rows]
        return np.unique(names, return_inverse=True)[1] if names else np.zeros(0, np.int64)

    def read_by_windows(self, shards: int) -> None:
        """The plan reads `shards` shards at a time (ShardFiles.read_by_windows)."""
        self.files.read_by_windows({r["split"] for r in self.rows}, shards)

    def raw(self, index: int) -> dict:
        """The stored members of sample `index` ({field: bytes}), checked against the
        manifest's checksum."""
        row = self.rows[index]
        return parse_sample(self.sample_bytes(index), row["shard"], row["key"])

    def sample_bytes(self, index: int) -> bytes:
        """The tar bytes of sample `index`, checked against the manifest's checksum."""
        row = self.rows[index]
        return self.files.sample_bytes(
            row["shard"], row["offset"], row["bytes"], row["key"], row["sample_sha256"]
        )

    def load(self, index: int, epoch: int) -> dict:
        row = self.rows[index]
        raw = self.raw(index)
        sample: dict = {"key": row["key"], **label_fields(row)}
        for field, payload in raw.items():
            if field.startswith("__"):
                continue
            try:
                if field.startswith("image.") and field != "image.npy":
                    array = decode_image(payload, field.split(".", 1)[1])
                    sample["image"] = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
                elif field == "image.npy":
                    sample["image"] = _npy(payload)
                elif field == "mask.npy":
                    sample["mask"] = _npy(payload)
                elif field == "json":
                    json.loads(payload)  # a member that does not parse is a corrupt sample
            except Exception as exc:  # each codec raises its own error for corrupt bytes
                raise DatasetError(
                    f"{row['shard']}: sample {row['key']!r} member {field!r} "
                    f"does not decode ({exc})"
                ) from exc
        if "image" not in sample:
            raise DatasetError(f"{row['shard']}: sample {row['key']!r} has no image member")
        return sample


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index, 7])


class PatchSamples:
    """`samples_per_volume` patches per volume of a split: item i is a patch of volume
    i // samples_per_volume; with `foreground_prob` p a patch is centred on a stored
    foreground voxel, else drawn uniformly (TorchIO's LabelSampler and UniformSampler).
    Along an axis where the volume is smaller than the patch, the volume sits in the
    middle of the patch, padded by `pad_mode` (MONAI's SpatialPad, TorchIO's CropOrPad).
    `read` copies a patch once, straight into the caller's array (a batch slot)."""

    def __init__(
        self,
        dataset: Dataset,
        select: Selection,
        patch_size: tuple[int, int, int],
        *,
        samples_per_volume: int = 4,
        foreground_prob: float = 0.33,
        seed: int = 0,
        pad_mode: PadMode = "minimum",
    ):
        self.dataset = dataset
        self.rows = ZarrColumns(dataset.manifest, select)
        self.pad_mode = pad_mode
        if not len(self.rows):
            raise DatasetError(
                f"{dataset.location}: {select} holds no volumes to draw patches from"
            )
        self.patch = tuple(int(p) for p in patch_size)
        self.per_volume = samples_per_volume
        self.foreground_prob = foreground_prob
        self.seed = seed
        self.foreground = read_foreground(dataset.path) if foreground_prob > 0 else {}
        self.reader = RegionReader(dataset.path)
        self.masked = "mask" in dataset.card.fields
        self.channels = int(self.rows.shapes[0, 0])

    def __len__(self) -> int:
        return len(self.rows) * self.per_volume

    def key(self, index: int) -> str:
        return f"{self.rows.keys[index // self.per_volume]}#{index % self.per_volume}"

    def stored_key(self, index: int) -> str:
        """The manifest's key of the volume that item `index` cuts its patch from."""
        return str(self.rows.keys[index // self.per_volume])

    def shards(self) -> np.ndarray:
        """The volume each item cuts its patch from (a shuffle by shards' unit: the Zarr
        group a cache fetches whole)."""
        return np.arange(len(self)) // self.per_volume

    def origin(self, index: int, epoch: int) -> np.ndarray:
        """The patch's first voxel in volume coordinates: negative along an axis where the
        volume is smaller than the patch (it is then centred)."""
        row = index // self.per_volume
        rng = _rng(self.seed, epoch, index)
        shape = self.rows.shapes[row, 1:4]
        patch = np.asarray(self.patch)
        low = np.minimum(-((patch - shape) // 2), 0)
        high = np.where(shape < patch, low, shape - patch)
        points = self.foreground.get(str(self.rows.keys[row]), {})
        if points and rng.random() < self.foreground_prob:
            label = sorted(points)[rng.integers(len(points))]  # every label equally likely
            centre = points[label][rng.integers(len(points[label]))]
            return np.clip(centre - patch // 2, low, high)
        return np.array([rng.integers(lo, hi + 1) for lo, hi in zip(low, high)])

    def storage(self, index: int) -> tuple[tuple[float, float], ...]:
        """Each channel's (scale, offset) from stored to real values ((1, 0) unless the
        volume was stored as scaled integers)."""
        row = index // self.per_volume
        group = self.rows.paths[row]
        attributes = fetched(self, row, lambda: self.reader.attributes(f"{group}/image"))
        scaled = attributes.get("intensity")
        if not scaled:
            return ((1.0, 0.0),) * self.channels
        return tuple(zip(scaled["scale"], scaled["offset"]))

    def read(self, index: int, origin, image: np.ndarray, mask: np.ndarray | None) -> None:
        """Copy the patch at `origin` of item `index`'s volume (stored values) into
        `image` (c, *patch) and `mask` (*patch): arrays or views of any dtype."""
        row = index // self.per_volume
        fetched(self, row, lambda: self._read(row, origin, image, mask))

    def _read(self, row: int, origin, image: np.ndarray, mask: np.ndarray | None) -> None:
        path = str(self.rows.paths[row])
        if int(self.rows.shapes[row, 0]) != image.shape[0]:
            raise DatasetError(
                f"{self.dataset.location}: volume {self.rows.keys[row]!r} has "
                f"{self.rows.shapes[row, 0]} channels, the others {image.shape[0]}"
            )
        window, placed = patch_window(origin, self.patch, self.rows.shapes[row, 1:4])
        arrays = [(f"{path}/image", image, self.pad_mode, (slice(None),))]
        if mask is not None:
            arrays.append((f"{path}/labels/mask", mask, "constant", ()))
        for array, out, mode, lead in arrays:
            region = (*[slice(0, out.shape[0])] * len(lead), *window)
            if all(s.stop - s.start == p for s, p in zip(window, self.patch)):
                self.reader.read_into(array, out, region)  # the usual case: one copy
                continue
            inside = np.empty([s.stop - s.start for s in region], self.reader.dtype(array))
            self.reader.read_into(array, inside, region)
            out[...] = pad_patch(inside, placed, self.patch, mode)

    def load(self, index: int, epoch: int) -> dict:
        """One patch as numpy arrays: stored values, or real values (float32) where the
        volume was stored as scaled integers."""
        origin = self.origin(index, epoch)
        storage = self.storage(index)
        scaled = any(pair != (1.0, 0.0) for pair in storage)
        path = str(self.rows.paths[index // self.per_volume])
        dtype = np.float32 if scaled else self.reader.dtype(f"{path}/image")
        image = np.empty((self.channels, *self.patch), dtype)
        mask = (
            np.empty(self.patch, self.reader.dtype(f"{path}/labels/mask")) if self.masked else None
        )
        self.read(index, origin, image, mask)
        for channel, (scale, offset) in enumerate(storage if scaled else ()):
            image[channel] *= scale
            image[channel] += offset
        sample = {
            "key": self.key(index),
            "origin": origin,
            **self.rows.label_fields(index // self.per_volume),
            "image": image,
        }
        if mask is not None:
            sample["mask"] = mask
        return sample


def patch_window(
    origin, patch: tuple[int, ...], shape
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """For a patch at `origin` of a volume of `shape`: the region to read (inside the
    volume) and where it lies in the patch."""
    read, placed = [], []
    for o, p, s in zip((int(v) for v in origin), patch, shape):
        start, stop = max(o, 0), min(o + p, s)
        read.append(slice(start, stop))
        placed.append(slice(start - o, stop - o))
    return tuple(read), tuple(placed)


def pad_patch(
    array: np.ndarray, placed: tuple[slice, ...], patch: tuple[int, ...], mode: PadMode
) -> np.ndarray:
    """`array` ((c,) z, y, x), read from a volume, at `placed` in a patch of `patch`
    voxels; the rest filled by `mode`, per channel."""
    if tuple(array.shape[-len(patch) :]) == tuple(patch):
        return np.ascontiguousarray(array)
    lead = array.ndim - len(patch)
    if mode == "reflect":
        pads = [(0, 0)] * lead + [(s.start, p - s.stop) for s, p in zip(placed, patch)]
        return np.pad(array, pads, mode="reflect")
    out = np.zeros(array.shape[:lead] + tuple(patch), array.dtype)
    if mode == "minimum" and array.size:
        out[...] = array.min(axis=tuple(range(lead, array.ndim)), keepdims=True)
    out[(slice(None),) * lead + placed] = array
    return out


class ClipSamples:
    """Clips of `clip_len` frames of each video of a split: `clips_per_video` random starts
    per video, or with `sequential` every start `stride` frames apart. `read` copies a
    clip once, straight into the caller's array (a batch slot)."""

    def __init__(
        self,
        dataset: Dataset,
        select: Selection,
        clip_len: int,
        *,
        clips_per_video: int = 1,
        sequential: bool = False,
        stride: int | None = None,
        seed: int = 0,
    ):
        self.dataset = dataset
        self.rows = ZarrColumns(dataset.manifest, select)
        frames = self.rows.shapes[:, 0] if len(self.rows) else np.zeros(0, np.int64)
        short = self.rows.keys[frames < clip_len]
        if len(short):
            raise DatasetError(
                f"{dataset.location}: video {str(short[0])!r} is shorter than clips of "
                f"{clip_len} frames"
            )
        self.clip_len, self.seed = clip_len, seed
        self.reader = RegionReader(dataset.path)
        self.channels = int(self.rows.shapes[0, 3]) if self.rows.shapes.shape[1:] == (4,) else 1
        if sequential:
            step = stride or clip_len
            counts = (frames - clip_len) // step + 1
            self.videos = np.repeat(np.arange(len(self.rows)), counts)
            self.starts = np.concatenate(
                [np.arange(n) * step for n in counts] or [np.zeros(0, np.int64)]
            ).astype(np.int64)
        else:
            self.videos = np.repeat(np.arange(len(self.rows)), clips_per_video)
            self.starts = np.full(len(self.videos), -1, np.int64)  # drawn per epoch

    def __len__(self) -> int:
        return len(self.videos)

    def key(self, index: int) -> str:
        return f"{self.rows.keys[self.videos[index]]}#{index}"

    def stored_key(self, index: int) -> str:
        """The manifest's key of the video that item `index` cuts its clip from."""
        return str(self.rows.keys[self.videos[index]])

    def shards(self) -> np.ndarray:
        """The video each item cuts its clip from (a shuffle by shards' unit: the Zarr
        group a cache fetches whole)."""
        return np.asarray(self.videos, np.int64)

    def start(self, index: int, epoch: int) -> int:
        start = int(self.starts[index])
        if start >= 0:
            return start
        frames = int(self.rows.shapes[self.videos[index], 0])
        return int(_rng(self.seed, epoch, index).integers(0, frames - self.clip_len + 1))

    def read(self, index: int, start: int, out: np.ndarray) -> None:
        """Copy the clip of item `index` from frame `start` into `out` (T, C, H, W)."""
        row = self.videos[index]
        frames = out[:, 0] if self.rows.shapes.shape[1] == 3 else out.transpose(0, 2, 3, 1)
        region = (slice(start, start + self.clip_len), *(slice(0, n) for n in frames.shape[1:]))
        group = self.rows.paths[row]
        fetched(self, row, lambda: self.reader.read_into(f"{group}/image", frames, region))

    def load(self, index: int, epoch: int) -> dict:
        start = self.start(index, epoch)
        shape = self.rows.shapes[self.videos[index]]
        clip = np.empty((self.clip_len, self.channels, *shape[1:3]), np.uint8)
        self.read(index, start, clip)
        return {
            "key": self.key(index),
            "start": start,
            "image": clip,
            **self.rows.label_fields(self.videos[index]),
        }
