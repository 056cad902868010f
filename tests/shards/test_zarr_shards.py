import re

import numpy as np
import pytest
import zarr

from medshard.errors import CorruptDataError
from medshard.shards.zarr_layout import CODECS, ZarrLayout
from medshard.shards.zarr_shards import RegionReader
from medshard.shards.zarr_store import ZarrReader, create_store, write_sample
from tests.shards.conftest import flip_byte

REGIONS = [
    (slice(0, 20), slice(0, 33), slice(0, 40)),  # the whole volume
    (slice(3, 19), slice(5, 21), slice(7, 23)),  # across chunk edges
    (slice(19, 20), slice(32, 33), slice(39, 40)),  # the last voxel, in a padded edge chunk
]


def volume(dtype=np.uint16) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 4000, (2, 20, 33, 40)).astype(dtype)


def write(tmp_path, image, codec, mask=None, **layout):
    create_store(tmp_path)
    layout = ZarrLayout(patch=(16, 16, 16), codec=codec, **layout)
    write_sample(tmp_path, "s1", image, axes="czyx", spacing=(1, 1, 1), layout=layout, mask=mask)
    return tmp_path


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("region", REGIONS)
def test_regions_match_zarr_and_tensorstore(tmp_path, codec, region):
    image = volume()
    mask = (image[0] > 2000).astype(np.uint8)
    path = write(tmp_path, image, codec, mask)
    reader = RegionReader(path)
    expected = zarr.open_array(str(path / "zarr/s1/image"), mode="r")[(slice(None), *region)]
    assert np.array_equal(expected, image[(slice(None), *region)])
    assert np.array_equal(ZarrReader(path).read("zarr/s1/image", (slice(None), *region)), expected)
    out = np.empty(expected.shape, np.float32)  # converted on the way into the batch
    reader.read_into("zarr/s1/image", out, (slice(0, 2), *region))
    assert np.array_equal(out, expected)
    got = np.empty(mask[region].shape, np.uint8)
    reader.read_into("zarr/s1/labels/mask", got, region)
    assert np.array_equal(got, mask[region])


@pytest.mark.parametrize("codec", CODECS)
def test_reads_through_a_flipped_and_turned_view(tmp_path, codec):
    image = volume(np.float32)
    path = write(tmp_path, image, codec)
    region = (slice(0, 2), slice(2, 18), slice(4, 20), slice(8, 24))
    out = np.empty((2, 16, 16, 16), np.float32)
    view = np.flip(np.rot90(out, -1, axes=(2, 3)), (1, 3))
    RegionReader(path).read_into("zarr/s1/image", view, region)
    assert np.array_equal(out, np.rot90(np.flip(image[region], (1, 3)), 1, axes=(2, 3)))


def test_unwritten_chunks_read_as_the_fill_value(tmp_path):
    create_store(tmp_path)
    root = zarr.open_group(str(tmp_path / "zarr"), mode="a")
    array = root.create_array(
        "a", shape=(2, 8, 8, 8), dtype="float32", chunks=(2, 4, 4, 4), shards=(2, 8, 8, 8)
    )
    array[:, :4, :4, :4] = 5.0  # one of eight inner chunks written
    out = np.full((2, 8, 8, 8), -1, np.float32)
    RegionReader(tmp_path).read_into("zarr/a", out, tuple(slice(0, s) for s in out.shape))
    assert np.array_equal(out, array[...])


def test_other_layouts_go_through_tensorstore(tmp_path):
    create_store(tmp_path)
    root = zarr.open_group(str(tmp_path / "zarr"), mode="a")
    plain = root.create_array("plain", shape=(4, 6), dtype="int32", chunks=(2, 3))  # unsharded
    plain[...] = np.arange(24).reshape(4, 6)
    out = np.zeros((2, 3), np.int32)
    RegionReader(tmp_path).read_into("zarr/plain", out, (slice(1, 3), slice(2, 5)))
    assert np.array_equal(out, plain[1:3, 2:5])


@pytest.mark.parametrize("codec", CODECS)
def test_a_flipped_byte_anywhere_in_the_shard_is_refused_by_name(tmp_path, codec):
    image = volume()
    path = write(tmp_path, image, codec)
    shard = path / "zarr/s1/image/c/0/0/0/0"
    original = shard.read_bytes()
    whole = (slice(0, 2), slice(0, 20), slice(0, 33), slice(0, 40))
    for position in range(0, len(original), max(1, len(original) // 40)):
        flip_byte(shard, position)
        with pytest.raises(CorruptDataError, match="^" + re.escape(str(shard)) + ": "):
            RegionReader(path).read_into("zarr/s1/image", np.empty(image.shape), whole)
        shard.write_bytes(original)
    out = np.empty(image.shape, image.dtype)
    RegionReader(path).read_into("zarr/s1/image", out, whole)
    assert np.array_equal(out, image)


def test_a_truncated_shard_is_refused(tmp_path):
    path = write(tmp_path, volume(), "none")
    shard = path / "zarr/s1/image/c/0/0/0/0"
    shard.write_bytes(shard.read_bytes()[:10])
    with pytest.raises(CorruptDataError, match="truncated"):
        RegionReader(path).read_into(
            "zarr/s1/image", np.empty((2, 1, 1, 1)), (slice(0, 2), *REGIONS[2])
        )


def test_reads_stay_right_when_mapped_pages_are_handed_back(tmp_path):
    image = volume(np.float32)
    path = write(tmp_path, image, "none")
    reader = RegionReader(path, map_budget=1)  # hands pages back after every read
    for region in REGIONS * 2:
        out = np.empty((2, *(s.stop - s.start for s in region)), np.float32)
        reader.read_into("zarr/s1/image", out, (slice(0, 2), *region))
        assert np.array_equal(out, image[(slice(None), *region)])


def test_attributes_give_the_stored_intensity_scale(tmp_path):
    image = volume(np.float32) / 7
    path = write(tmp_path, image, "none", intensity="int16")
    attributes = RegionReader(path).attributes("zarr/s1/image")
    scale, offset = (np.asarray(attributes["intensity"][k]) for k in ("scale", "offset"))
    stored = np.empty(image.shape, np.float32)
    RegionReader(path).read_into("zarr/s1/image", stored, (slice(0, 2), *REGIONS[0]))
    values = stored * scale[:, None, None, None] + offset[:, None, None, None]
    assert np.allclose(values, image, atol=scale.max() / 2 + 1e-6)
