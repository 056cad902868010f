"""Decoding of encoded 2D images, shared by ingest (to check and measure) and the loaders'
torch path (to train). The format layer never decodes."""

from __future__ import annotations

import io

# Imported here, once, not on a first decode: a loader's threads decode at once, and
# CPython 3.11 can fail compiling one module in two threads ("AST constructor recursion
# depth mismatch") where no bytecode is cached.
import imagecodecs
import numpy as np
import tifffile
from PIL import JpegImagePlugin, PngImagePlugin

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "decode_image", "declared_shape"]

# Accepted suffixes and the member extension each is stored under.
IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".tif": "tif", ".tiff": "tif"}

# Pillow's own default (PIL.Image.MAX_IMAGE_PIXELS): about 0.25 GiB of 24-bit pixels.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def decode_image(data: bytes, ext: str) -> np.ndarray:
    """Decode encoded bytes to (height, width[, channels]) with the stored bit depth: gray,
    gray+alpha, RGB or RGBA; palette and CMYK images come back as RGB(A), never indices."""
    if ext == "png":
        # libpng keeps 16-bit PNGs 16-bit and expands palettes to RGB(A)
        return imagecodecs.png_decode(data)
    if ext == "jpg":
        # PIL refuses a truncated JPEG; libjpeg alone only warns. The plugin class, not
        # Image.open: the pixel limit is medshard's (declared_shape), checked before
        # decoding, and Image.open would apply Pillow's own on top of it.
        with JpegImagePlugin.JpegImageFile(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")  # CMYK (Adobe) JPEGs
            return np.asarray(image)
    if ext == "tif":
        return tifffile.imread(io.BytesIO(data))
    raise ValueError(f"unsupported image type .{ext}")


def declared_shape(data: bytes, ext: str) -> tuple[int, ...]:
    """The pixel grid an image's header declares, channels left out, read without decoding
    the pixels: (height, width), or (pages, height, width) for a multi-page TIFF."""
    if ext in ("png", "jpg"):
        plugin = PngImagePlugin.PngImageFile if ext == "png" else JpegImagePlugin.JpegImageFile
        with plugin(io.BytesIO(data)) as image:
            width, height = image.size
            return (height, width)
    if ext == "tif":
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            axes = zip(series.shape, series.axes, strict=True)
            return tuple(n for n, axis in axes if axis != "S")  # S: samples per pixel
    raise ValueError(f"unsupported image type .{ext}")
