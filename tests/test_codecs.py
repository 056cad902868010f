"""decode_image keeps bit depth and gives colour, never palette indices; declared_shape reads
only the header. On real pictures from scikit-image."""

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image

from medshard.codecs import declared_shape, decode_image

COINS = np.ascontiguousarray(skimage.data.coins()[:48, :64])
ASTRONAUT = np.ascontiguousarray(skimage.data.astronaut()[:48, :64])
OPAQUE = np.full(COINS.shape, 200, np.uint8)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def bomb_png(height: int, width: int) -> bytes:
    """A valid gray PNG of zeros declaring height x width, written chunk by chunk so the
    test never holds its pixels (20000 x 20000 gives ~390 KB)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    deflate = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_palette_png_decodes_as_rgb_not_indices():
    palette = Image.fromarray(COINS).convert("P")
    decoded = decode_image(encode(palette, "PNG"), "png")
    assert decoded.shape == (48, 64, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, np.asarray(palette.convert("RGB")))


def test_palette_png_with_transparency_decodes_as_rgba():
    palette = Image.fromarray(COINS).convert("P")
    data = encode(palette, "PNG", transparency=0)
    decoded = decode_image(data, "png")
    assert decoded.shape == (48, 64, 4)
    assert np.array_equal(decoded, np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")))


@pytest.mark.parametrize(
    ("mode", "pixels", "shape", "dtype"),
    [
        ("LA", np.dstack([COINS, OPAQUE]), (48, 64, 2), np.uint8),
        ("RGBA", np.dstack([ASTRONAUT, OPAQUE]), (48, 64, 4), np.uint8),
        (None, COINS.astype(np.uint16) * 257, (48, 64), np.uint16),
    ],
    ids=["gray-alpha", "rgba", "gray16"],
)
def test_png_keeps_its_channels_and_bit_depth(mode, pixels, shape, dtype):
    decoded = decode_image(encode(Image.fromarray(pixels, mode=mode), "PNG"), "png")
    assert decoded.shape == shape and decoded.dtype == dtype
    assert np.array_equal(decoded, pixels)


def test_cmyk_jpeg_decodes_as_rgb():
    cmyk = Image.fromarray(ASTRONAUT).convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    decoded = decode_image(data, "jpg")
    assert decoded.shape == (48, 64, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert np.abs(decoded.astype(int) - ASTRONAUT).mean() < 8  # the picture, not inverted ink


def test_declared_shape_of_each_format():
    assert declared_shape(encode(Image.fromarray(ASTRONAUT), "PNG"), "png") == (48, 64)
    assert declared_shape(encode(Image.fromarray(ASTRONAUT), "JPEG"), "jpg") == (48, 64)
    rgb_tiff, stack_tiff = io.BytesIO(), io.BytesIO()
    tifffile.imwrite(rgb_tiff, ASTRONAUT)
    tifffile.imwrite(stack_tiff, np.stack([COINS] * 5))
    assert declared_shape(rgb_tiff.getvalue(), "tif") == (48, 64)  # samples are not pixels
    assert declared_shape(stack_tiff.getvalue(), "tif") == (5, 48, 64)


def test_declared_shape_of_a_bomb_reads_only_the_header():
    data = bomb_png(20_000, 20_000)
    assert len(data) < 500_000
    tracemalloc.start()
    try:
        shape = declared_shape(data, "png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shape == (20_000, 20_000)
    assert peak < 10 * 2**20  # decoding would take 400 MB


def test_tiff_bomb_declares_its_shape_without_decoding():
    tile = np.zeros((1024, 1024), np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        (tile for _ in range(400)),
        shape=(20 * 1024, 20 * 1024),
        dtype=np.uint8,
        tile=(1024, 1024),
        compression="zlib",
    )
    assert declared_shape(buffer.getvalue(), "tif") == (20 * 1024, 20 * 1024)
