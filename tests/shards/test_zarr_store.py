import numpy as np
import pytest
import zarr

from medshard.shards.zarr_store import (
    array_sha256,
    chunk_shape,
    consolidate,
    create_store,
    open_sample,
    write_sample,
)


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
        patch=(16, 16, 16),
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
    ts = pytest.importorskip("tensorstore")
    path, image, mask, _ = stored
    for name, expected in (("image", image), ("labels/mask", mask)):
        store = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "zarr/s1" / name)}}
        ).result()
        assert np.array_equal(store.read().result(), expected)


def test_sharded_chunks_from_the_patch_size(stored):
    path, *_ = stored
    array = zarr.open_array(str(path / "zarr/s1/image"), mode="r")
    assert array.chunks == (1, 8, 8, 8)
    assert array.shards == (1, 24, 40, 40)
    assert chunk_shape((3, 100, 7, 200), "czyx", (64, 64, 64)) == (1, 32, 7, 32)


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
