"""Decode a 2D image file once at ingest: refuse what does not decode, is too large or holds
non-finite pixels; measure what passes."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medshard.codecs import IMAGE_EXTENSIONS, MAX_PIXELS, declared_shape, decode_image
from medshard.ingest.stats import SampleStats, sample_stats

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageInfo",
    "decode_image",
    "probe_bytes",
    "probe_image",
]


@dataclass(frozen=True)
class ImageInfo:
    ext: str  # member extension: png, jpg or tif
    shape: tuple[int, int, int]  # (channels, height, width)
    dtype: str
    sha256: str
    nbytes: int  # encoded size on disk
    # In units of the image's own bit depth (uint16 / 65535), alpha left out: what the
    # dataset's intensity statistics pool.
    stats: SampleStats
    pixels: np.ndarray  # the decoded (height, width, channels) array


def probe_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Read, checksum and fully decode one image; ValueError with the reason if it fails."""
    path = Path(path)
    ext = IMAGE_EXTENSIONS.get(path.suffix.lower())
    if ext is None:
        accepted = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(f"unsupported image type {path.suffix!r} (accepted: {accepted})")
    return probe_bytes(path.read_bytes(), ext, max_pixels)


def probe_bytes(data: bytes, ext: str, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Checksum and fully decode one encoded image; ValueError with the reason if it fails."""
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
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array).all(axis=2)))
        raise ValueError(
            f"holds {bad} non-finite pixels (NaN or infinity); replace them with finite "
            "values before ingest"
        )
    sha256 = hashlib.sha256(data).hexdigest()
    colour = array[:, :, : 1 if array.shape[2] < 3 else 3]  # alpha carries no intensity
    scale = float(np.iinfo(array.dtype).max) if array.dtype.kind in "ui" else 1.0
    return ImageInfo(
        ext=ext,
        shape=(array.shape[2], *array.shape[:2]),
        dtype=str(array.dtype),
        sha256=sha256,
        nbytes=len(data),
        stats=sample_stats(np.moveaxis(colour, 2, 0), int(sha256[:16], 16), scale),
        pixels=array,
    )
