"""Decode a 2D image file once at ingest: refuse what does not decode, measure what does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medshard.codecs import IMAGE_EXTENSIONS, decode_image

__all__ = ["IMAGE_EXTENSIONS", "ImageInfo", "probe_image", "decode_image"]


@dataclass(frozen=True)
class ImageInfo:
    ext: str  # member extension: png, jpg or tif
    shape: tuple[int, int, int]  # (channels, height, width)
    dtype: str
    sha256: str
    nbytes: int  # encoded size on disk
    # Per-channel sums for the dataset's intensity statistics.
    pixels: int
    total: tuple[float, ...]
    total_sq: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]


def probe_image(path: str | Path) -> ImageInfo:
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
        array = decode_image(data, ext)
    except Exception as exc:  # every codec raises its own type for a corrupt file
        raise ValueError(f"cannot decode the image, it is truncated or corrupt ({exc})") from exc
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] > 4):
        raise ValueError(f"holds an array of shape {array.shape}, not one 2D image")
    if array.ndim == 2:
        array = array[:, :, None]
    height, width, channels = array.shape
    flat = array.reshape(-1, channels)
    as_float = flat.astype(np.float64)
    return ImageInfo(
        ext=ext,
        shape=(channels, height, width),
        dtype=str(array.dtype),
        sha256=hashlib.sha256(data).hexdigest(),
        nbytes=len(data),
        pixels=height * width,
        total=tuple(as_float.sum(axis=0).tolist()),
        total_sq=tuple(np.einsum("ij,ij->j", as_float, as_float).tolist()),
        minimum=tuple(flat.min(axis=0).tolist()),
        maximum=tuple(flat.max(axis=0).tolist()),
    )
