"""Decoding of encoded 2D images, shared by ingest (to check and measure) and the loaders'
torch path (to train). The format layer never decodes."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "decode_image"]

# Accepted suffixes and the member extension each is stored under.
IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".tif": "tif", ".tiff": "tif"}


def decode_image(data: bytes, ext: str) -> np.ndarray:
    """Decode encoded bytes to (height, width[, channels]) with the stored bit depth."""
    if ext == "png":
        import imagecodecs  # libpng keeps 16-bit colour PNGs 16-bit, unlike PIL

        return imagecodecs.png_decode(data)
    if ext == "jpg":
        from PIL import Image  # PIL refuses a truncated JPEG; libjpeg alone only warns

        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.asarray(image)
    if ext == "tif":
        import tifffile

        return tifffile.imread(io.BytesIO(data))
    raise ValueError(f"unsupported image type .{ext}")
