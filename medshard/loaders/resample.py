"""The resampling kernel of the 2D chain's resizes: DALI's antialiased linear filter (a
triangle as wide as the scale when shrinking), edge pixels repeated beyond the border.

Integer images are resized as integers and rounded, as DALI resizes them: 8-bit ones
through torch's vectorised uint8 kernel (the same filter, ten times faster than float
work), other types in float32. torch renormalises the filter where it reaches past the
border instead of repeating the edge pixel, so the few output rows and columns whose
filter reaches past it are computed again here, by the filter's taps."""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["border_outputs", "resample_axis", "resize", "resize_nearest", "resize_taps"]


def _raw_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    scale = size_in / size_out
    radius = max(scale, 1.0)  # a triangle as wide as the scale when shrinking: antialiasing
    centre = (np.arange(size_out) + 0.5) * scale - 0.5
    taps = np.floor(centre - radius)[:, None] + 1 + np.arange(math.ceil(2 * radius) + 1)
    weight = np.clip(1 - np.abs(taps - centre[:, None]) / radius, 0, None)
    return taps, weight / weight.sum(axis=1, keepdims=True)


@lru_cache(maxsize=256)
def resize_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel along one axis: the input pixels it reads (edge pixels
    repeated beyond the border) and their weights (summing to 1), as (index, weight)
    arrays of shape (size_out, taps)."""
    taps, weight = _raw_taps(size_in, size_out)
    return np.clip(taps, 0, size_in - 1).astype(np.int64), weight.astype(np.float32)


@lru_cache(maxsize=256)
def border_outputs(size_in: int, size_out: int) -> np.ndarray:
    """The output pixels along one axis whose filter reaches past the border (where
    repeating the edge pixel and renormalising the filter differ)."""
    if size_in == size_out:
        return np.zeros(0, np.int64)
    taps, weight = _raw_taps(size_in, size_out)
    outside = ((taps < 0) | (taps >= size_in)) & (weight > 0)
    return np.flatnonzero(outside.any(axis=1))


def resample_axis(
    image: torch.Tensor, axis: int, size_out: int, rows: np.ndarray | None = None
) -> torch.Tensor:
    """Float `image` resampled along `axis` (-2 or -1) to `size_out` by the filter's taps;
    with `rows`, only those output pixels."""
    index, weight = resize_taps(image.shape[axis], size_out)
    if rows is not None:
        index, weight = index[rows], weight[rows]
    index_t = torch.from_numpy(index).to(image.device)
    weight_t = torch.from_numpy(weight).to(image.device)
    picked = image.index_select(axis, index_t.flatten())
    if axis == -2:  # (..., out * taps, W) -> (..., out, taps, W)
        return (picked.unflatten(-2, index.shape) * weight_t[:, :, None]).sum(-2)
    return (picked.unflatten(-1, index.shape) * weight_t).sum(-1)  # (..., H, out, taps)


@lru_cache(maxsize=256)
def _matrix(size_in: int, size_out: int) -> torch.Tensor:
    """The filter along one axis as a dense (size_out, size_in) float32 matrix."""
    index, weight = resize_taps(size_in, size_out)
    dense = np.zeros((size_out, size_in), np.float32)
    np.add.at(dense, (np.arange(size_out)[:, None], index), weight)
    return torch.from_numpy(dense)


@lru_cache(maxsize=256)
def _border_filter(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(border outputs, the input pixels they read, their filter over those pixels) along
    one axis, as numpy arrays."""
    outputs = border_outputs(size_in, size_out)
    dense = _matrix(size_in, size_out).numpy()[outputs]
    read = np.flatnonzero(dense.any(axis=0))
    return outputs, read, np.ascontiguousarray(dense[:, read])


def _exact_borders(out: torch.Tensor, source: torch.Tensor, size: tuple[int, int]) -> None:
    """Recompute in place the rows and columns of `out` (N, C, h, w) whose filter reaches
    past the border of `source` (N, C, H, W), from the few input pixels they read. On a
    CPU in numpy: these products are too small to pay for torch's dispatch."""
    height, width = source.shape[-2:]
    rows, rows_read, rows_filter = _border_filter(height, size[0])
    cols, cols_read, cols_filter = _border_filter(width, size[1])
    if not len(rows) and not len(cols):
        return
    cpu = source.device.type == "cpu"
    src = source.numpy() if cpu else source
    dst = out.numpy() if cpu else out
    along_h, along_w = (_matrix(height, size[0]), _matrix(width, size[1]))
    if cpu:
        along_h, along_w = along_h.numpy(), along_w.numpy()
    else:
        along_h, along_w = along_h.to(source.device), along_w.to(source.device)
        rows_filter, cols_filter = (
            torch.from_numpy(f).to(source.device) for f in (rows_filter, cols_filter)
        )
    rounding = not out.is_floating_point()

    def put(region, band) -> None:
        if rounding:
            band = band.round() if not cpu else np.rint(band)
        if cpu:
            dst[region] = band
        else:
            dst[region] = band.to(out.dtype)

    if len(rows):
        cut = src[..., rows_read, :]
        cut = cut.astype(np.float32) if cpu else cut.float()
        put((Ellipsis, rows, slice(None)), rows_filter @ cut @ along_w.T)
    if len(cols):
        cut = src[..., :, cols_read]
        cut = cut.astype(np.float32) if cpu else cut.float()
        put((Ellipsis, slice(None), cols), along_h @ (cut @ cols_filter.T))


def resize(image: torch.Tensor | np.ndarray, size: tuple[int, int]) -> torch.Tensor | np.ndarray:
    """(..., C, H, W) resampled to `size` (H, W); integer types rounded to the nearest
    value and kept, floats computed in float32; a numpy array in, a numpy array out."""
    size = (int(size[0]), int(size[1]))
    if tuple(image.shape[-2:]) == size:
        return image
    if isinstance(image, np.ndarray):
        with warnings.catch_warnings():  # read only: a decoder's; resizing never writes it
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            source = torch.from_numpy(image)
        return resize(source, size).numpy()
    lead = image.shape[:-3]
    flat = image.reshape(-1, *image.shape[-3:])
    if image.dtype == torch.uint8:
        # in the layout it comes in: torch's uint8 kernel is fastest on channels-last data
        # (as decoders give it), but reordering other data first costs more than it saves
        fast = F.interpolate(flat, size=size, mode="bilinear", antialias=True)
        _exact_borders(fast, flat, size)
        return fast.reshape(*lead, *fast.shape[-3:])
    source = flat.float()
    out = F.interpolate(source, size=size, mode="bilinear", antialias=True)
    _exact_borders(out, source, size)
    if not image.is_floating_point():
        info = torch.iinfo(image.dtype)
        out = out.round_().clamp_(info.min, info.max).to(image.dtype)
    elif out.dtype != image.dtype:
        out = out.to(image.dtype)
    return out.reshape(*lead, *out.shape[-3:])


def resize_nearest(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) label maps resampled to `size` by the nearest input pixel (the one
    under each output pixel's centre), as DALI's nearest-neighbour resize does."""
    for axis, size_out in ((-2, size[0]), (-1, size[1])):
        size_in = labels.shape[axis]
        if size_in == size_out:
            continue
        source = np.floor((np.arange(size_out) + 0.5) * (size_in / size_out)).astype(np.int64)
        index = torch.from_numpy(np.clip(source, 0, size_in - 1)).to(labels.device)
        labels = labels.index_select(axis, index)
    return labels
