"""Training copies made at ingest, on real pictures: decoded once, alpha left out, area-
averaged once, in the source's own bit depth; the archive's bytes stay untouched."""

import hashlib
import io

import imagecodecs
import numpy as np
import pytest
import skimage.data

from medshard.codecs import decode_image
from medshard.errors import BadInputError
from medshard.ingest.train_copy import TrainCopy, copy_size, encode_copy, make_copy
from medshard.shards.reader import open_dataset
from tests.conftest import ingest
from tests.real_data import MIXED_TILES, mixed_tile_table


def test_copy_size_scales_the_longest_side_down_and_never_up():
    assert copy_size(512, 384, (256,)) == (256, 192)
    assert copy_size(100, 60, (256,)) == (100, 60)
    assert copy_size(100, 60, (224, 256)) == (224, 256)


def test_shrinking_by_two_is_the_mean_of_each_two_by_two_block():
    camera = skimage.data.camera()[:64, :96]
    copy = make_copy(camera[:, :, None], TrainCopy(size=48))
    blocks = camera.reshape(32, 2, 48, 2).astype(float).mean(axis=(1, 3))
    assert copy.shape == (1, 32, 48) and copy.dtype == np.uint8
    assert np.abs(copy[0].astype(float) - blocks).max() <= 0.5


def test_sixteen_bit_copies_stay_sixteen_bit_and_alpha_is_left_out():
    cell16 = (skimage.data.cell()[:64, :64].astype(np.uint16) * 257)[:, :, None]
    copy16 = make_copy(cell16, TrainCopy(size=32))
    assert copy16.dtype == np.uint16 and copy16.max() > 255
    rgba = np.concatenate(
        [skimage.data.astronaut()[:64, :64], np.full((64, 64, 1), 7, np.uint8)], axis=2
    )
    assert make_copy(rgba, TrainCopy(size=32)).shape == (3, 32, 32)


def test_png_copies_keep_sixteen_bits_and_jpeg_refuses_them():
    cell16 = (skimage.data.cell()[:64, :64].astype(np.uint16) * 257)[:, :, None]
    copy = make_copy(cell16, TrainCopy(size=32))
    decoded = imagecodecs.png_decode(encode_copy(copy, TrainCopy(size=32, format="png")))
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, copy[0])
    with pytest.raises(ValueError, match="would cut this uint16 image to 8 bits"):
        encode_copy(copy, TrainCopy(size=32, format="jpeg"))


def test_ingest_stores_a_raw_copy_beside_the_untouched_original(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage", train_size="48", val_fraction=0.0)
    ds = open_dataset(tmp_path / "ds")
    assert "train.npy" in ds.card.fields and ds.card.options["train_size"] == [48]
    assert not (tmp_path / "ds" / ".scratch").exists()
    samples = {s["__key__"]: s for s in ds.samples("train")}
    assert len(samples) == len(MIXED_TILES)
    for row in ds.manifest.to_pylist():
        sample = samples[row["key"]]
        (image_field,) = [f for f in sample if f.startswith("image.")]
        original = sample[image_field]
        assert hashlib.sha256(original).hexdigest() == row["source_sha256"][0]
        pixels = decode_image(original, image_field.split(".")[1])
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        copy = np.load(io.BytesIO(sample["train.npy"]), allow_pickle=False)
        assert np.array_equal(copy, make_copy(pixels, TrainCopy(size=48)))
        assert copy.dtype == pixels.dtype and copy.shape[1:] == (48, 48)


def test_a_jpeg_copy_of_a_sixteen_bit_tile_is_refused_naming_it(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    with pytest.raises(BadInputError, match=r"cell_gray16\.png: a JPEG training copy would cut"):
        ingest(table, tmp_path / "ds", label_col="stage", train_size=48, train_format="jpeg")
    assert not (tmp_path / "ds").exists()


def test_a_png_copy_of_a_float_image_is_refused_naming_raw():
    moon = skimage.data.moon()[:32, :32].astype(np.float32)[:, :, None] / 255
    with pytest.raises(
        ValueError, match="a PNG training copy holds unsigned integers, not float32"
    ):
        encode_copy(make_copy(moon, TrainCopy(size=16)), TrainCopy(size=16, format="png"))
