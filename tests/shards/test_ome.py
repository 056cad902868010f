"""OME-NGFF 0.5 attributes of the Zarr store, read back with ome-zarr's reader (the one
napari's OME-Zarr plugin uses): the image with its axes and spacing, the mask as a label
image on the same grid."""

import numpy as np
import pytest
import zarr

from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.ingest.video import VideoIngestOptions, ingest_video
from medshard.shards.reader import open_dataset
from medshard.shards.zarr_store import open_sample
from tests.conftest import write_table
from tests.real_data import write_mp4
from tests.volume_data import nifti_subjects

ome_io = pytest.importorskip("ome_zarr.io")
ome_reader = pytest.importorskip("ome_zarr.reader")

QUIET = dict(workers=1, processes=False, quiet=True, val_fraction=0.0)


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """Two-modality NIfTI subjects on an anisotropic grid, masks labelled 1 and 2."""
    root = tmp_path_factory.mktemp("ome-subjects")
    table = nifti_subjects(root / "raw", n=2)
    options = NiftiIngestOptions(
        table=table,
        out=root / "ds",
        modalities=("t1", "t2"),
        mask_col="seg",
        key_col="subject",
        **QUIET,
    )
    ingest_nifti(options)
    return root / "ds"


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


def test_every_label_value_has_its_own_colour_and_the_image_as_source(subjects):
    ds = open_dataset(subjects)
    row = ds.manifest.to_pylist()[0]
    _, mask = open_sample(subjects, row["zarr_path"])
    labels = zarr.open_group(str(subjects / row["zarr_path"] / "labels"), mode="r")
    ome = labels.attrs["ome"]
    assert ome["labels"] == ["mask"] and ome["image-label"]["source"] == {"image": "../"}
    colours = {c["label-value"]: tuple(c["rgba"]) for c in ome["image-label"]["colors"]}
    assert sorted(colours) == sorted(set(np.unique(mask[...])) - {0}) == [1, 2]
    assert len(set(colours.values())) == 2

    node, (label,) = read_nodes(subjects / row["zarr_path"])
    # canonical affine diag(1, 1.5, 2): spacing (z, y, x) = (2, 1.5, 1), two modalities
    assert scale_of(node) == [1.0, 2.0, 1.5, 1.0] and scale_of(label) == [2.0, 1.5, 1.0]
    assert node.data[0].shape == (2, 8, 14, 10) and label.data[0].shape == (8, 14, 10)


def test_a_volume_without_a_mask_has_no_label_image(tmp_path):
    table = nifti_subjects(tmp_path / "raw", n=1)
    options = NiftiIngestOptions(
        table=table, out=tmp_path / "ds", modalities=("t1",), key_col="subject", **QUIET
    )
    ingest_nifti(options)
    row = open_dataset(tmp_path / "ds").manifest.to_pylist()[0]
    node, labels = read_nodes(tmp_path / "ds" / row["zarr_path"])
    assert labels == [] and node.data[0].shape == (1, 8, 14, 10)


@pytest.mark.parametrize("channels", [1, 3])
def test_videos_open_with_a_time_axis_in_seconds_when_ngff_can_describe_them(tmp_path, channels):
    """NGFF puts channels before space: colour frames stored `tyxc` declare no multiscale,
    and keep their axes in medshard's own attributes."""
    write_mp4(tmp_path / "raw/a.mp4", frames=9, fps=10)
    table = write_table(tmp_path / "raw/index.csv", ["video_path"], [["a.mp4"]])
    options = VideoIngestOptions(
        table=table,
        out=tmp_path / "ds",
        video_col="video_path",
        size=(64, 80),
        channels=channels,
        **QUIET,
    )
    ingest_video(options)
    row = open_dataset(tmp_path / "ds").manifest.to_pylist()[0]
    where = tmp_path / "ds" / row["zarr_path"]
    if channels == 3:
        assert zarr.open_group(str(where), mode="r").attrs["ome"] == {"version": "0.5"}
        assert all(not n.data for n in ome_reader.Reader(ome_io.parse_url(str(where)))())
        return
    node, labels = read_nodes(where)
    assert axis_names(node) == ["t", "y", "x"] and labels == []
    assert node.metadata["axes"][0]["unit"] == "second"
    assert scale_of(node) == [0.1, 1.0, 1.0] and node.data[0].shape == (9, 64, 80)
