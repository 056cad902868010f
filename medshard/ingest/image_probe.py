"""Decode a 2D image file once at ingest: refuse what does not decode, is too large or holds
non-finite pixels; measure what passes."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medshard.codecs import IMAGE_EXTENSIONS, MAX_PIXELS, declared_shape, decode_image

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "ImageInfo", "probe_image", "decode_image"]

# Values per block of rows measured at once: the float64 working copy stays near 8 MB
# whatever the image's size.
_BLOCK_VALUES = 1 << 20


@dataclass(frozen=True)
class ImageInfo:
    ext: str  # member extension: png, jpg or tif
    shape: tuple[int, int, int]  # (channels, height, width)
    dtype: str
    sha256: str
    nbytes: int  # encoded size on disk
    # Per-channel sums for the dataset's intensity statistics, in stored units, every
    # channel (alpha included).
    pixels: int
    total: tuple[float, ...]
    total_sq: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]


def probe_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Read, checksum and fully decode one image; ValueError with the reason if it fails."""
    path = Path(path)
    ext = IMAGE_EXTENSIONS.get(path.suffix.lower())
    if ext is None:
        accepted = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(f"unsupported image type {path.suffix!r} (accepted: {accepted})")
    data = path.read_bytes()
    if not data:
        raise ValueError("the file is empty")
    try:
        declared = declared_shape(data, ext)
        too_large = math.prod(declared) > max_pixels
        array = None if too_large else decode_image(data, ext)
    except Exception as exc:  # every codec raises its own type for a corrupt file
        raise ValueError(f"cannot decode the image, it is truncated or corrupt ({exc})") from exc
    if array is None:
        grid = " x ".join(str(n) for n in declared)
        raise ValueError(
            f"declares {grid} = {math.prod(declared):,} pixels, more than the limit of "
            f"{max_pixels:,} against decompression bombs; if the image is genuine, raise "
            "--max-pixels"
        )
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] > 4):
        raise ValueError(f"holds an array of shape {array.shape}, not one 2D image")
    if array.ndim == 2:
        array = array[:, :, None]
    if not array.size:
        raise ValueError(f"holds an empty image of shape {array.shape[:2]}")
    height, width, channels = array.shape
    total, total_sq, minimum, maximum, bad = _measure(array)
    if bad:
        raise ValueError(
            f"holds {bad} non-finite pixels (NaN or infinity); replace them with finite "
            "values before ingest"
        )
    return ImageInfo(
        ext=ext,
        shape=(channels, height, width),
        dtype=str(array.dtype),
        sha256=hashlib.sha256(data).hexdigest(),
        nbytes=len(data),
        pixels=height * width,
        total=tuple(total.tolist()),
        total_sq=tuple(total_sq.tolist()),
        minimum=tuple(minimum.tolist()),
        maximum=tuple(maximum.tolist()),
    )


def _measure(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-channel sum, sum of squares, min and max of a (H, W, C) image, and its count of
    pixels with a non-finite value; in blocks of rows, never a float64 copy of the whole."""
    height, width, channels = array.shape
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    minimum = np.full(channels, np.inf)
    maximum = np.full(channels, -np.inf)
    bad = 0
    rows = max(1, _BLOCK_VALUES // (width * channels))
    buffer = np.empty((min(rows, height) * width, channels))  # one block, reused
    for start in range(0, height, rows):
        part = array[start : start + rows].reshape(-1, channels)
        block = buffer[: len(part)]
        block[...] = part
        if array.dtype.kind == "f":
            finite = np.isfinite(block).all(axis=1)
            bad += int(finite.size - np.count_nonzero(finite))
        total += block.sum(axis=0)
        np.minimum(minimum, block.min(axis=0), out=minimum)
        np.maximum(maximum, block.max(axis=0), out=maximum)
        total_sq += np.square(block, out=block).sum(axis=0)  # in place: no second block
    return total, total_sq, minimum, maximum, bad
