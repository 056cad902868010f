import json

import numpy as np
import pytest
import zarr

from medshard.shards.zarr_layout import (
    IntensityError,
    ZarrLayout,
    chunk_shape,
    encode_intensity,
)
from medshard.shards.zarr_store import array_sha256, create_store, write_sample


def mri_like(shape=(2, 6, 7, 8)) -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.normal(300, 80, shape) * [[[[1.0]]], [[[3.0]]]]).astype(np.float32)


@pytest.mark.parametrize(
    ("codec", "compressor"), [("lz4", "blosc"), ("zstd", "blosc"), ("none", None)]
)
def test_codec_and_crc32c_recorded_in_each_array(tmp_path, codec, compressor):
    create_store(tmp_path)
    layout = ZarrLayout(patch=(4, 4, 4), codec=codec)
    write_sample(tmp_path, "s", mri_like(), axes="czyx", spacing=(1, 1, 1), layout=layout)
    meta = json.loads((tmp_path / "zarr/s/image/zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert [c["name"] for c in inner] == ["bytes", *([compressor] if compressor else []), "crc32c"]
    if codec != "none":
        assert inner[1]["configuration"]["cname"] == codec
    assert np.array_equal(zarr.open_array(str(tmp_path / "zarr/s/image"))[...], mri_like())


def test_shuffle_only_for_values_wider_than_a_byte():
    from medshard.shards.zarr_layout import inner_codecs

    assert inner_codecs("lz4", np.dtype("uint8"))[0].shuffle.value == "noshuffle"
    assert inner_codecs("lz4", np.dtype("float32"))[0].shuffle.value == "shuffle"


def test_uncompressed_chunks_keep_a_patchs_rows_whole():
    chunks = chunk_shape((1, 160, 192, 160), "czyx", (64, 64, 64), "none")
    assert chunks == (1, 54, 192, 160)  # whole planes, a patch deep: a patch touches 2 chunks
    big = chunk_shape((1, 300, 2048, 2048), "czyx", (64, 64, 64), "none", itemsize=2)
    assert big == (1, 60, 256, 2048) and np.prod(big) * 2 <= 64 * 2**20  # rows stay whole
    assert chunk_shape((300, 128, 128), "tyx", (8, 128, 128), "none") == (8, 128, 128)


def test_compressed_chunks_are_about_half_a_patch():
    assert chunk_shape((3, 160, 192, 160), "czyx", (64, 64, 64), "lz4") == (3, 32, 32, 32)


def test_float16_halves_the_bytes_within_its_precision():
    image = mri_like()
    stored, attributes = encode_intensity(image, "float16", "s")
    assert stored.dtype == np.float16 and attributes == {}
    assert np.allclose(stored, image, rtol=2**-10)


def test_int16_records_a_scale_and_offset_per_channel():
    image = mri_like()
    stored, attributes = encode_intensity(image, "int16", "s")
    scale = np.asarray(attributes["intensity"]["scale"])[:, None, None, None]
    offset = np.asarray(attributes["intensity"]["offset"])[:, None, None, None]
    assert stored.dtype == np.int16
    assert np.abs(stored * scale + offset - image).max() <= scale.max() / 2 * 1.001
    assert stored.min() >= -32767 and stored.max() <= 32767


def test_integer_images_are_stored_as_they_are():
    image = np.arange(24, dtype=np.uint16).reshape(1, 2, 3, 4)
    for intensity in ("float16", "int16"):
        stored, attributes = encode_intensity(image, intensity, "s")
        assert stored is image and attributes == {}


def test_float16_refuses_values_it_cannot_hold():
    image = np.full((1, 2, 2, 2), 70000.0, np.float32)
    with pytest.raises(IntensityError, match="^sub-1: intensity 70000 is beyond float16"):
        encode_intensity(image, "float16", "sub-1")


def test_the_checksum_is_of_the_stored_values(tmp_path):
    create_store(tmp_path)
    layout = ZarrLayout(patch=(4, 4, 4), intensity="float16")
    info = write_sample(tmp_path, "s", mri_like(), axes="czyx", spacing=(1, 1, 1), layout=layout)
    stored = zarr.open_array(str(tmp_path / "zarr/s/image"))[...]
    assert info["dtype"] == "float16" and info["sha256"]["image"] == array_sha256(stored)


def test_a_stored_type_that_blurs_the_values_that_matter_is_refused():
    """nibabel's anatomical MRI as floats: int16 keeps it within a step, until one voxel
    of 1e9 leaves a handful of levels for the brain; float16 of values near 1e-9 keeps
    zeros."""
    import nibabel as nib

    from tests.real_data import NIBABEL_DATA

    brain = np.asarray(nib.load(NIBABEL_DATA / "anatomical.nii").dataobj, np.float32)[None]
    stored, attributes = encode_intensity(brain, "int16", "anat")  # a normal range: kept
    scale = attributes["intensity"]["scale"][0]
    assert np.abs(stored * scale + attributes["intensity"]["offset"][0] - brain).max() <= scale
    outlier = brain.copy()
    outlier.flat[0] = 1e9
    with pytest.raises(IntensityError, match=r"^anat: int16 storage would change its values"):
        encode_intensity(outlier, "int16", "anat")
    tiny = (brain - brain.min()) / (brain.max() - brain.min()) * 4e-9 + 1e-9
    with pytest.raises(IntensityError, match=r"^anat: float16 storage would change its values"):
        encode_intensity(tiny, "float16", "anat")
    encode_intensity(brain, "float16", "anat")  # a normal range: kept
