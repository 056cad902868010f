"""The DALI graph of a 2D image batch: the stored bytes of each sample's pixel member in,
normalised (C, H, W) floats out, the same steps as the torch backend (loaders/chain2d.py).

A raw training copy (`.npy`) is read by `fn.decoders.numpy`, an encoded image (the
original, or a JPEG or PNG copy) by `fn.decoders.image`, on the GPU (`mixed`, nvJPEG)
when there is one. The chain's geometric steps run on the stored integers, then the
values become floats once, scaled by the bit depth, and the intensity steps follow."""

from __future__ import annotations

import numpy as np

from medshard.errors import DatasetError
from medshard.loaders.chain2d import QuarterTurns, Transform2D
from medshard.loaders.copies import PixelSource
from medshard.loaders.frame_format import LUMA, bit_depth_scale

__all__ = ["check_raw_copies", "image_nodes"]


def check_raw_copies(path, pixels: PixelSource, dtypes: set[str]) -> None:
    """Refuse raw copies that one DALI batch cannot hold: types that differ."""
    if pixels.raw and len(dtypes) > 1:
        raise DatasetError(
            f"{path}: its raw training copies mix {' and '.join(sorted(dtypes))} values, "
            "which one DALI batch cannot hold; use backend='torch', or original=True"
        )


def image_nodes(
    stored,
    pixels: PixelSource,
    chain: list[Transform2D],
    *,
    training: bool,
    channels: int,
    dtype: str,
    cuda: bool,
):
    """(C, H, W) float32 batch nodes from `stored` (each sample's pixel member as bytes);
    `dtype`: the stored type ('uint16' where any sample is 16-bit)."""
    from nvidia.dali import fn, types

    colours = {1 if s[0] < 3 else 3 for s in pixels.shapes.values()}
    if pixels.raw:
        decoded = fn.decoders.numpy(stored)  # a CPU operator: the arrays then cross
        image = fn.transpose(
            decoded.gpu() if cuda else decoded, perm=[1, 2, 0], output_layout="HWC"
        )
        if channels == 3 and 1 in colours:  # gray repeated, colour kept: broadcasting
            image = image * np.ones((1, 1, 3), dtype)
        scale = bit_depth_scale(dtype)
    else:
        # DALI turns gray, RGBA and palette into `channels` and scales each sample's
        # values to the requested type's range: 8-bit by 257 into 16 bits.
        image = fn.decoders.image(
            stored,
            device="mixed" if cuda else "cpu",
            output_type=types.RGB if channels == 3 else types.GRAY,
            dtype=types.UINT16 if dtype == "uint16" else types.UINT8,
        )
        scale = 65535.0 if dtype == "uint16" else 255.0
    x = image
    for transform in chain:
        if not transform.geometric:
            continue
        if isinstance(transform, QuarterTurns) and dtype == "uint16":
            # fn.rotate takes no uint16: the values turn as the int16 of the same bits
            moved = fn.reinterpret(x, dtype=types.INT16)
            turned = transform.dali(moved, **transform.dali_params(training))
            x = fn.reinterpret(turned, dtype=types.UINT16)
        else:
            x = transform.dali(x, **transform.dali_params(training))
    x = fn.cast(x, dtype=types.FLOAT) * np.float32(1 / scale)
    if pixels.raw and channels == 1 and 3 in colours:  # gray by luma (gray samples kept)
        x = fn.reductions.sum(x * np.asarray(LUMA, np.float32).reshape(1, 1, 3), axes=[2])
        x = fn.expand_dims(x, axes=[2], new_axis_names="C")
    for transform in chain:
        if not transform.geometric:
            x = transform.dali(x, **transform.dali_params(training))
    return fn.transpose(x, perm=[2, 0, 1])
