import json
import re

import numpy as np
import pytest
import zarr

from medshard.errors import CorruptDataError
from medshard.shards.zarr_store import (
    ZarrLayout,
    ZarrReader,
    array_sha256,
    chunk_shape,
    consolidate,
    create_store,
    open_sample,
    write_sample,
)
from tests.shards.conftest import flip_byte


@pytest.fixture
def stored(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (2, 20, 33, 40), dtype=np.uint16)
    mask = (image[0] > 3000).astype(np.uint8)
    create_store(tmp_path)
    info = write_sample(
        tmp_path,
        "s1",
        image,
        axes="czyx",
        spacing=(2.0, 0.5, 0.5),
        layout=ZarrLayout(patch=(16, 16, 16), codec="zstd"),
        mask=mask,
        attributes={"channel_names": ["a", "b"]},
    )
    consolidate(tmp_path)
    return tmp_path, image, mask, info


def test_round_trip_through_zarr(stored):
    path, image, mask, info = stored
    got_image, got_mask = open_sample(path, info["zarr_path"])
    assert np.array_equal(got_image[...], image) and np.array_equal(got_mask[...], mask)
    assert info["sha256"]["image"] == array_sha256(image)


def test_tensorstore_zarr3_driver_reads_the_same_values(stored):
    import tensorstore as ts

    path, image, mask, _ = stored
    for name, expected in (("image", image), ("labels/mask", mask)):
        store = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "zarr/s1" / name)}}
        ).result()
        assert np.array_equal(store.read().result(), expected)


def test_sharded_chunks_from_the_patch_size(stored):
    path, *_ = stored
    array = zarr.open_array(str(path / "zarr/s1/image"), mode="r")
    assert array.chunks == (2, 7, 7, 8)  # every channel; 20 voxels as 3 chunks of 7
    assert array.shards == (2, 21, 35, 40)  # the whole array is one shard
    # compressed chunks are about half a patch, uncompressed ones whole planes a patch deep
    assert chunk_shape((3, 100, 7, 200), "czyx", (64, 64, 64), "zstd") == (3, 25, 7, 29)
    assert chunk_shape((3, 160, 192, 160), "czyx", (64, 64, 64), "none") == (3, 54, 192, 160)


def test_ome_ngff_attributes_give_axes_units_and_scale(stored):
    path, *_ = stored
    group = zarr.open_group(str(path / "zarr/s1"), mode="r")
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert group.attrs["ome"]["version"] == "0.5"
    assert [a["name"] for a in multiscale["axes"]] == ["c", "z", "y", "x"]
    assert multiscale["axes"][1]["unit"] == "millimeter"
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [1.0, 2.0, 0.5, 0.5] and multiscale["datasets"][0]["path"] == "image"
    assert group.attrs["medshard"]["channel_names"] == ["a", "b"]


def test_consolidated_metadata_lists_every_array(stored):
    path, *_ = stored
    root = zarr.open_consolidated(str(path / "zarr"), zarr_format=3)
    assert set(root.metadata.consolidated_metadata.flattened_metadata) >= {
        "s1/image",
        "s1/labels/mask",
    }


def codec_names(array_path) -> tuple[list[str], list[str]]:
    """(inner codecs, index codecs) of a sharded array's zarr.json."""
    metadata = json.loads((array_path / "zarr.json").read_text())
    (sharding,) = metadata["codecs"]
    config = sharding["configuration"]
    return [c["name"] for c in config["codecs"]], [c["name"] for c in config["index_codecs"]]


def test_every_chunk_and_shard_index_carries_a_crc32c(stored):
    path, *_ = stored
    for name in ("image", "labels/mask"):
        inner, index = codec_names(path / "zarr/s1" / name)
        assert inner[-1] == "crc32c" and index[-1] == "crc32c"


def test_a_flipped_byte_anywhere_in_a_shard_file_is_refused_by_name(stored):
    path, image, *_ = stored
    chunk_file = path / "zarr/s1/image/c/0/0/0/0"
    original = chunk_file.read_bytes()
    for position in range(0, len(original), len(original) // 40):
        flip_byte(chunk_file, position)
        reader = ZarrReader(path)  # a fresh reader opens the array anew
        with pytest.raises(
            CorruptDataError, match="^" + re.escape(f"{path}/zarr/s1/image: a stored chunk")
        ):
            reader.read("zarr/s1/image")
        chunk_file.write_bytes(original)
    assert np.array_equal(ZarrReader(path).read("zarr/s1/image"), image)


def test_a_flipped_byte_in_a_real_volume_is_refused_when_the_patch_is_read(real_volumes):
    array = "zarr/anatomical/image"
    reader = ZarrReader(real_volumes)
    expected = zarr.open_array(str(real_volumes / array), mode="r")[...]
    assert np.array_equal(reader.read(array), expected)  # tensorstore reads the crc32c codec
    assert codec_names(real_volumes / array)[0][-1] == "crc32c"
    flip_byte(real_volumes / array / "c/0/0/0/0", 10)  # inside the first inner chunk
    patch = (slice(None), slice(0, 16), slice(0, 16), slice(0, 16))
    with pytest.raises(
        CorruptDataError, match=re.escape(f"{real_volumes / array}: a stored chunk is damaged")
    ):
        ZarrReader(real_volumes).read(array, patch)
    with pytest.raises(ValueError, match="checksum"):  # zarr-python refuses it as well
        zarr.open_array(str(real_volumes / array), mode="r")[...]
