"""How a sample's arrays lie in the Zarr store: inner chunks, codec and the stored intensity
type. The training layout is chosen for reading: a patch touches few chunks, and chunks are
uncompressed by default, so that a patch is copied from the page cache in place; LZ4 (the
codec nnU-Net v2 moved to from zstd) when disk or page cache is short, zstd for archives
(docs/performance.md has the measurements). Every chunk ends in a crc32c checksum."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from medshard.errors import MedshardError

__all__ = [
    "CODECS",
    "Codec",
    "Intensity",
    "IntensityError",
    "ZarrLayout",
    "chunk_shape",
    "encode_intensity",
    "inner_codecs",
]

Codec = Literal["lz4", "zstd", "none"]
CODECS: tuple[str, ...] = ("lz4", "zstd", "none")
# How floating-point intensities are stored: as they are ("source"), as float16, or as
# int16 with a per-channel scale and offset recorded beside them (value = q * scale +
# offset). Both halve the bytes of float32; integer images are always stored as they are.
Intensity = Literal["source", "float16", "int16"]
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_RAW_CHUNK_BYTES = 64 * 2**20  # an uncompressed chunk is checked whole on its first read
_INT16_LIMIT = 32767


class IntensityError(MedshardError, ValueError):
    """Intensities that the chosen storage type cannot hold."""


@dataclass(frozen=True)
class ZarrLayout:
    """The layout options of one ingest: the training patch that chunks are sized for,
    the codec, and how intensities are stored."""

    patch: tuple[int, ...] = (64, 64, 64)
    codec: Codec = "none"
    intensity: Intensity = "source"

    @classmethod
    def of(cls, layout: ZarrLayout | Sequence[int] | None) -> ZarrLayout:
        """A layout, or the default layout for a bare patch size."""
        if isinstance(layout, ZarrLayout):
            return layout
        return cls() if layout is None else cls(patch=tuple(int(p) for p in layout))


def _balanced(dim: int, wanted: int) -> int:
    """The chunk size nearest `wanted` that covers `dim` with the least padding."""
    count = -(-int(dim) // max(1, int(wanted)))
    return int(max(1, -(-int(dim) // count)))


def chunk_shape(
    shape: Sequence[int],
    axes: str,
    patch: Sequence[int],
    codec: Codec = "none",
    itemsize: int = 4,
) -> tuple[int, ...]:
    """Inner chunks sized from the training patch, every channel in one chunk (a patch
    reads all channels). Compressed chunks are decoded whole, so they are about half a
    patch along each axis: a random patch decodes at most 27 of them. Uncompressed chunks
    are read in place, so their cost is the number of runs a patch's rows break into:
    they are about a patch deep along the first spatial axis and hold whole rows and
    planes (halved while a chunk passes `_RAW_CHUNK_BYTES`), so a patch's rows stay whole
    and it touches at most two chunks. Sizes are balanced so that the chunks cover an
    axis with little padding."""
    sizes = list(patch)
    spatial = [i for i, axis in enumerate(axes) if axis != "c"]
    chunks = [int(d) for d in shape]
    for order, i in enumerate(spatial):
        size = sizes[order] if order < len(sizes) else 64
        if codec != "none":
            chunks[i] = _balanced(shape[i], max(8, size // 2))
        elif order == 0:
            chunks[i] = _balanced(shape[i], size)
    if codec == "none":
        for i in spatial[1:]:  # rows stay whole longest: halve the planes first
            while int(np.prod(chunks)) * itemsize > _RAW_CHUNK_BYTES and chunks[i] > 1:
                chunks[i] = _balanced(shape[i], -(-chunks[i] // 2))
    return tuple(chunks)


def inner_codecs(codec: Codec, dtype: np.dtype) -> tuple:
    """The zarr codecs of each inner chunk after its bytes: the compressor, then crc32c
    (after compression, so zarr and tensorstore refuse a damaged chunk before decoding).
    Byte shuffle only pays for values wider than one byte."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    wide = np.dtype(dtype).itemsize > 1
    if codec == "none":
        return (Crc32cCodec(),)
    if codec == "lz4":
        shuffle = "shuffle" if wide else "noshuffle"
        return (BloscCodec(cname="lz4", clevel=5, shuffle=shuffle), Crc32cCodec())
    shuffle = "bitshuffle" if wide else "noshuffle"
    return (BloscCodec(cname="zstd", clevel=3, shuffle=shuffle), Crc32cCodec())


def encode_intensity(
    array: np.ndarray, intensity: Intensity, where: str
) -> tuple[np.ndarray, dict]:
    """(stored array, attributes a reader needs to get the values back) for a (c, ...)
    image. Integer images and `source` are stored as they are."""
    if intensity == "source" or not np.issubdtype(array.dtype, np.floating):
        return array, {}
    channels = array.reshape(array.shape[0], -1)
    low, high = channels.min(axis=1).astype(np.float64), channels.max(axis=1).astype(np.float64)
    if intensity == "float16":
        largest = float(np.max(np.maximum(-low, high)))
        if largest > _FLOAT16_MAX:
            raise IntensityError(
                f"{where}: intensity {largest:g} is beyond float16's largest value "
                f"{_FLOAT16_MAX:g}; store it as int16 or as its source type"
            )
        stored = array.astype(np.float16)
        _check_resolution(array, stored, np.ones(len(low)), np.zeros(len(low)), "float16", where)
        return stored, {}
    offset = (high + low) / 2
    scale = np.where(high > low, (high - low) / (2 * _INT16_LIMIT), 1.0)
    stored = np.empty(array.shape, np.int16)
    for channel, values in enumerate(array):  # float32 blocks, never a float64 copy
        level = (values - np.float32(offset[channel])) * np.float32(1 / scale[channel])
        np.clip(np.rint(level, out=level), -_INT16_LIMIT, _INT16_LIMIT, out=level)
        stored[channel] = level
    _check_resolution(array, stored, scale, offset, "int16", where)
    return stored, {"intensity": {"scale": scale.tolist(), "offset": offset.tolist()}}


def _check_resolution(source, stored, scale, offset, intensity: str, where: str) -> None:
    """Refuse a stored type that blurs the values that matter: its error on a sample of
    each channel's voxels beyond 1/256 of the range of the middle 99% of them (of all of
    them where 99% are one value) (int16 of a
    volume with one huge outlier keeps a handful of levels for the rest; float16 of
    values below its smallest normal number keeps zeros)."""
    for channel in range(len(source)):
        flat = source[channel].reshape(-1)
        picks = flat[:: max(1, flat.size // 65536)].astype(np.float64)
        back = stored[channel].reshape(-1)[:: max(1, flat.size // 65536)].astype(np.float64)
        error = float(np.max(np.abs(back * scale[channel] + offset[channel] - picks)))
        low, high = np.percentile(picks, [0.5, 99.5])
        if high == low:  # a sparse channel (99% one value): the whole range is what matters
            low, high = float(picks.min()), float(picks.max())
        if error > (high - low) / 256:
            other = "float16" if intensity == "int16" else "int16"
            raise IntensityError(
                f"{where}: {intensity} storage would change its values by up to {error:.3g}, "
                f"more than 1/256 of the range that holds 99% of them ({low:.3g} to "
                f"{high:.3g}); store it as {other} or as its source type (--intensity source)"
            )
