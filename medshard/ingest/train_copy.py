"""Training copies of 2D images, made once at ingest (FFCV's lesson: do the expensive part
at write time): decoded, alpha left out, resized once with an area filter, and stored raw
(`.npy`, (C, H, W) in the source's own integer type) or re-encoded (JPEG, PNG)."""

from __future__ import annotations

import io
from typing import Annotated, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from medshard.ingest.members import npy_bytes

__all__ = ["CopySize", "TrainCopy", "TrainFormat", "copy_size", "encode_copy", "make_copy"]

TrainFormat = Literal["raw", "jpeg", "png"]
_EXTENSIONS = {"raw": "npy", "jpeg": "jpg", "png": "png"}
RESAMPLING = "area average when shrinking, bilinear when growing (torch.nn.functional.interpolate)"


def _parse_size(value):
    """'256' or 256: the longest side; '224,256' or (224, 256): height and width."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    value = (value,) if isinstance(value, int) else tuple(value)
    try:
        numbers = tuple(int(v) for v in value)
    except ValueError:
        numbers = ()
    if len(numbers) not in (1, 2) or min(numbers) <= 0:
        raise ValueError("give the longest side (256) or the size as H,W (224,256)")
    return numbers


CopySize = Annotated[tuple[int] | tuple[int, int], BeforeValidator(_parse_size)]


class TrainCopy(BaseModel):
    """How a dataset's training copies are made: `size` is the longest side (one number)
    or (height, width); images already smaller than a longest side keep their size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: CopySize
    format: TrainFormat = "raw"
    quality: int = Field(90, ge=1, le=100)  # JPEG only

    @property
    def field(self) -> str:
        """The tar member field of the copy: 'train.npy', 'train.jpg' or 'train.png'."""
        return f"train.{_EXTENSIONS[self.format]}"


def copy_size(height: int, width: int, size: tuple[int, ...]) -> tuple[int, int]:
    """The copy's (height, width): `size` itself, or the longest side scaled down to it."""
    if len(size) == 2:
        return size[0], size[1]
    scale = min(1.0, size[0] / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def make_copy(pixels: np.ndarray, spec: TrainCopy) -> np.ndarray:
    """A decoded (H, W, C) image as a (C, h, w) copy of the same integer type: alpha left
    out, area-averaged when shrinking (bilinear when growing), rounded, never truncated."""
    import torch
    import torch.nn.functional as F

    colour = pixels[:, :, : 1 if pixels.shape[2] < 3 else 3]
    height, width = copy_size(*colour.shape[:2], spec.size)
    chw = np.ascontiguousarray(np.moveaxis(colour, 2, 0))
    if (height, width) == chw.shape[1:]:
        return chw
    x = torch.from_numpy(chw.astype(np.float32))[None]
    shrinking = height <= chw.shape[1] and width <= chw.shape[2]
    if shrinking:
        resized = F.interpolate(x, size=(height, width), mode="area")
    else:
        resized = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    out = resized[0].round().numpy()
    if chw.dtype.kind in "ui":
        info = np.iinfo(chw.dtype)
        out = np.clip(out, info.min, info.max)
    return out.astype(chw.dtype)


def encode_copy(copy: np.ndarray, spec: TrainCopy) -> bytes:
    """A (C, H, W) copy as the bytes of its member; ValueError when the format would
    lose bits (a JPEG of a 16-bit image)."""
    if spec.format == "raw":
        return npy_bytes(copy)
    if copy.dtype.kind not in "u":
        raise ValueError(
            f"a {spec.format.upper()} training copy holds unsigned integers, not {copy.dtype}; "
            "use --train-format raw"
        )
    import imagecodecs

    hwc = np.ascontiguousarray(np.moveaxis(copy, 0, 2))
    image = hwc[:, :, 0] if hwc.shape[2] == 1 else hwc
    if spec.format == "png":
        return imagecodecs.png_encode(image)
    if copy.dtype != np.uint8:
        raise ValueError(
            f"a JPEG training copy would cut this {copy.dtype} image to 8 bits; "
            "use --train-format raw or png"
        )
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=spec.quality)
    return buffer.getvalue()
