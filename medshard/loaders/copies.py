"""Which pixels a 2D loader reads: a dataset's training copy (`KEY.train.npy`, `.jpg` or
`.png`: decoded once, resized once at ingest) by default when it has one, else, or with
`original=True`, the original's encoded bytes; and each sample's pixels as (C, H, W)
stored values: a view of a raw copy's bytes (no decode, no copy), or decoded."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from medshard.codecs import decode_image
from medshard.shards.reader import Dataset

__all__ = ["PixelSource", "copy_shape", "npy_view", "pixel_source"]

_COPY_PREFIX = "train."


def copy_shape(shape: list[int], train_size: list[int]) -> tuple[int, int, int]:
    """The (C, H, W) of the training copy of an image of stored `shape` (C, H, W): alpha
    left out, `train_size` as (H, W), or its longest side scaled down to one number (the
    rule of medshard.ingest.train_copy.copy_size, whose test holds both to it)."""
    channels = 1 if shape[0] < 3 else 3
    height, width = int(shape[1]), int(shape[2])
    if len(train_size) == 2:
        return channels, int(train_size[0]), int(train_size[1])
    scale = min(1.0, train_size[0] / max(height, width))
    return channels, max(1, round(height * scale)), max(1, round(width * scale))


def npy_view(payload: bytes) -> np.ndarray:
    """The array of `.npy` bytes as a read-only view of them (no copy, never unpickled)."""
    stream = io.BytesIO(payload)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    if dtype.hasobject:
        raise ValueError("an .npy member of objects is never unpickled")
    array = np.frombuffer(payload, dtype, count=int(np.prod(shape)), offset=stream.tell())
    return array.reshape(shape, order="F" if fortran else "C")


@dataclass(frozen=True)
class PixelSource:
    """The member fields a loader reads the pixels from (the original's may differ in
    extension from sample to sample), and each sample's stored (C, H, W) shape."""

    fields: tuple[str, ...]
    copy: bool  # a training copy, not the original
    shapes: dict[str, tuple[int, int, int]]  # by key

    @property
    def raw(self) -> bool:
        """Raw copies: arrays read in place, never decoded."""
        return self.fields == ("train.npy",)

    def field(self, sample: dict) -> str:
        """Which of `fields` a sample ({field: bytes}) holds."""
        found = next((f for f in self.fields if f in sample), None)
        if found is None:
            raise KeyError(f"no member {' or '.join(self.fields)!r}")
        return found

    def decode(self, field: str, payload: bytes) -> np.ndarray:
        """The pixels (C, H, W) of member `field`'s bytes."""
        if field.endswith(".npy"):
            return npy_view(payload)
        array = decode_image(payload, field.rsplit(".", 1)[1])
        return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)

    def pixels(self, sample: dict) -> np.ndarray:
        """The sample's pixels (C, H, W) from its members ({field: bytes})."""
        field = self.field(sample)
        return self.decode(field, sample[field])


def pixel_source(ds: Dataset, rows: list[dict], original: bool = False) -> PixelSource:
    """What `rows` of an image dataset are read from: its training copies unless
    `original` (or it has none), else the original images."""
    copies = [f for f in ds.card.fields if f.startswith(_COPY_PREFIX)]
    if copies and not original:
        train_size = list(ds.card.options["train_size"])
        shapes = {r["key"]: copy_shape(r["shape"], train_size) for r in rows}
        return PixelSource(tuple(copies), True, shapes)
    fields = tuple(f for f in ds.card.fields if f.startswith("image."))
    shapes = {r["key"]: tuple(int(v) for v in r["shape"][:3]) for r in rows}
    return PixelSource(fields, False, shapes)
