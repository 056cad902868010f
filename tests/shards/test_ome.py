"""OME-NGFF 0.5 attributes of the Zarr store, read back with ome-zarr's reader (the one
napari's OME-Zarr plugin uses): the image with its axes and spacing, the mask as a label
image on the same grid."""

import numpy as np
import pytest
import zarr

from medshard.shards.reader import open_dataset
from medshard.shards.zarr_store import create_store, open_sample, write_sample

ome_io = pytest.importorskip("ome_zarr.io")
ome_reader = pytest.importorskip("ome_zarr.reader")


def read_nodes(group_path) -> tuple:
    """(image node, label nodes) that ome-zarr's reader finds from a sample's group."""
    nodes = list(ome_reader.Reader(ome_io.parse_url(str(group_path)))())
    labels = [n for n in nodes if n.load(ome_reader.Label)]
    images = [n for n in nodes if n.data and not n.load(ome_reader.Label)]
    assert len(images) == 1
    return images[0], labels


def scale_of(node) -> list[float]:
    (transforms,) = node.metadata["coordinateTransformations"]
    return next(t["scale"] for t in transforms if t["type"] == "scale")


def axis_names(node) -> list[str]:
    return [a["name"] for a in node.metadata["axes"]]


@pytest.mark.parametrize("key", ["anatomical", "standard"])
def test_a_real_mri_opens_as_an_image_with_its_mask_as_a_label_image(real_volumes, key):
    row = next(r for r in open_dataset(real_volumes).manifest.to_pylist() if r["key"] == key)
    image, mask = open_sample(real_volumes, row["zarr_path"])
    node, labels = read_nodes(real_volumes / row["zarr_path"])

    assert axis_names(node) == ["c", "z", "y", "x"]
    assert node.data[0].shape == image.shape == tuple(row["shape"])
    assert scale_of(node) == [1.0, *row["spacing"]]
    assert np.array_equal(np.asarray(node.data[0]), image[...])

    (label,) = labels
    assert axis_names(label) == ["z", "y", "x"]
    assert label.data[0].shape == mask.shape == image.shape[1:]
    assert scale_of(label) == row["spacing"]  # the same physical grid as the image
    assert np.array_equal(np.asarray(label.data[0]), mask[...])
    assert set(label.metadata["color"]) == set(np.unique(mask[...])) - {0}


def test_every_label_value_has_its_own_colour_and_the_image_as_source(tmp_path):
    image = np.zeros((2, 6, 8, 10), np.uint16)
    mask = np.zeros((6, 8, 10), np.uint8)
    mask[1, 2, 3], mask[2, 3, 4], mask[3, 4, 5] = 1, 2, 7
    create_store(tmp_path)
    info = write_sample(
        tmp_path, "s", image, axes="czyx", spacing=(3.0, 0.5, 0.25), patch=(8, 8, 8), mask=mask
    )
    labels = zarr.open_group(str(tmp_path / info["zarr_path"] / "labels"), mode="r")
    ome = labels.attrs["ome"]
    assert ome["labels"] == ["mask"] and ome["image-label"]["source"] == {"image": "../"}
    colours = {c["label-value"]: tuple(c["rgba"]) for c in ome["image-label"]["colors"]}
    assert sorted(colours) == [1, 2, 7] and len(set(colours.values())) == 3

    node, (label,) = read_nodes(tmp_path / info["zarr_path"])
    assert scale_of(node) == [1.0, 3.0, 0.5, 0.25] and scale_of(label) == [3.0, 0.5, 0.25]
    assert label.data[0].shape == (6, 8, 10)


def test_a_volume_without_a_mask_has_no_label_image(tmp_path):
    create_store(tmp_path)
    info = write_sample(
        tmp_path, "s", np.ones((1, 4, 5, 6), np.float32), axes="czyx", spacing=(1, 1, 1), patch=(8,)
    )
    node, labels = read_nodes(tmp_path / info["zarr_path"])
    assert labels == [] and node.data[0].shape == (1, 4, 5, 6)


def test_a_gray_video_opens_with_a_time_axis_in_seconds(tmp_path):
    create_store(tmp_path)
    frames = np.arange(5 * 6 * 7, dtype=np.uint8).reshape(5, 6, 7)
    info = write_sample(
        tmp_path, "v", frames, axes="tyx", spacing=(0.1, 1.0, 1.0), patch=(4,), unit=None
    )
    node, labels = read_nodes(tmp_path / info["zarr_path"])
    assert axis_names(node) == ["t", "y", "x"] and labels == []
    assert node.metadata["axes"][0]["unit"] == "second"
    assert scale_of(node) == [0.1, 1.0, 1.0] and node.data[0].shape == (5, 6, 7)


def test_an_rgb_video_declares_no_multiscale_that_ngff_cannot_describe(tmp_path):
    """NGFF puts channels before space; `tyxc` is left to medshard's own attributes."""
    create_store(tmp_path)
    frames = np.zeros((3, 4, 5, 3), np.uint8)
    info = write_sample(
        tmp_path, "v", frames, axes="tyxc", spacing=(0.1, 1.0, 1.0), patch=(4,), unit=None
    )
    group = zarr.open_group(str(tmp_path / info["zarr_path"]), mode="r")
    assert group.attrs["ome"] == {"version": "0.5"}
    nodes = ome_reader.Reader(ome_io.parse_url(str(tmp_path / info["zarr_path"])))()
    assert all(not n.data for n in nodes)
