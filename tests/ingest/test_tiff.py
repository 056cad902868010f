import json

import numpy as np
import pytest
import tifffile

from medshard.errors import BadInputError
from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff
from medshard.shards.foreground import read_foreground
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from medshard.shards.zarr_store import open_sample
from tests.conftest import write_table
from tests.volume_data import tiff_root, volume, write_slices


def run(root, out, **options):
    defaults = dict(
        workers=1,
        processes=False,
        quiet=True,
        val_fraction=0.0,
        labels=root / "classes.csv" if (root / "classes.csv").exists() else None,
    )
    return ingest_tiff(TiffIngestOptions(root=root, out=out, **{**defaults, **options}))


def test_slice_folders_round_trip_voxel_exact_with_spacing(tmp_path):
    root, arrays = tiff_root(tmp_path / "raw")
    result = run(root, tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds")
    assert result.samples == 4 and ds.card.kind == "volumes" and ds.card.label_names == ["a", "b"]
    for row in ds.manifest.to_pylist():
        image, mask = open_sample(ds.path, row["zarr_path"])
        expected_image, expected_mask = arrays[row["key"]]
        assert np.array_equal(image[0], expected_image)  # natural order: slice_2 before slice_10
        assert np.array_equal(mask[...], expected_mask)
        assert row["spacing"] == [2.0, 0.25, 0.25] and row["shape"] == [1, 12, 20, 24]
        assert row["label"] == int(row["key"][1:]) % 2
    assert verify_dataset(ds.path).ok


def test_multipage_tiff_and_spacing_flag(tmp_path):
    image, _ = volume(7)
    (tmp_path / "raw").mkdir()
    tifffile.imwrite(tmp_path / "raw/cell_7.tif", image)
    run(tmp_path / "raw", tmp_path / "ds", spacing=(3.0, 1.0, 1.0))
    row = open_dataset(tmp_path / "ds").manifest.to_pylist()[0]
    assert row["key"] == "cell_7" and row["spacing"] == [3.0, 1.0, 1.0]
    assert np.array_equal(open_sample(tmp_path / "ds", row["zarr_path"])[0][0], image)


def test_ome_tiff_spacing_is_read(tmp_path):
    image, _ = volume(3)
    (tmp_path / "raw").mkdir()
    tifffile.imwrite(
        tmp_path / "raw/ome.ome.tif",
        image,
        metadata={"axes": "ZYX", "PhysicalSizeZ": 1.5, "PhysicalSizeY": 0.3, "PhysicalSizeX": 0.4},
    )
    run(tmp_path / "raw", tmp_path / "ds")
    assert open_dataset(tmp_path / "ds").manifest.to_pylist()[0]["spacing"] == [1.5, 0.3, 0.4]


def test_ome_tiff_spacing_units_become_micrometres(tmp_path):
    image, _ = volume(3)
    (tmp_path / "raw").mkdir()
    tifffile.imwrite(
        tmp_path / "raw/ome.ome.tif",
        image,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeZ": 0.002,
            "PhysicalSizeZUnit": "mm",
            "PhysicalSizeY": 300,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeX": 0.4,
        },
    )
    run(tmp_path / "raw", tmp_path / "ds")
    spacing = open_dataset(tmp_path / "ds").manifest.to_pylist()[0]["spacing"]
    assert spacing == pytest.approx([2.0, 0.3, 0.4])


def test_crops_are_aligned_with_the_volume_and_mask(tmp_path):
    root, arrays = tiff_root(tmp_path / "raw", n=2)
    run(root, tmp_path / "ds", crops=(6, 8, 8), shard_samples=5)
    ds = open_dataset(tmp_path / "ds")
    crops = list(ds.samples("train"))
    assert len(crops) == 2 * (2 * 2 * 3)  # floor(12/6) x floor(20/8) x floor(24/8) per volume
    for crop in crops:
        about = json.loads(crop["json"])
        image, mask = arrays[about["source_key"]]
        z, y, x = about["origin"]
        window = (slice(z, z + 6), slice(y, y + 8), slice(x, x + 8))
        got = np.load(__import__("io").BytesIO(crop["image.npy"]))
        got_mask = np.load(__import__("io").BytesIO(crop["mask.npy"]))
        assert got.shape == (1, 6, 8, 8) and np.array_equal(got[0], image[window])
        assert np.array_equal(got_mask, mask[window])
        assert int(crop["cls"]) == int(about["source_key"][1:]) % 2
    assert verify_dataset(ds.path).ok


def test_foreground_locations_are_inside_their_label(tmp_path):
    root, arrays = tiff_root(tmp_path / "raw", n=2)
    run(root, tmp_path / "ds")
    foreground = read_foreground(tmp_path / "ds")
    for key, (_, mask) in arrays.items():
        assert set(foreground[key]) == {1, 2}
        for label, coords in foreground[key].items():
            assert 0 < len(coords) <= 256
            assert (mask[tuple(coords.T)] == label).all()


def test_intensity_percentiles_in_the_card(tmp_path):
    root, arrays = tiff_root(tmp_path / "raw", n=2)
    card = run(root, tmp_path / "ds").card
    voxels = np.concatenate([a[0].ravel() for a in arrays.values()]).astype(float)
    assert card.stats.mean[0] == pytest.approx(voxels.mean())
    assert card.stats.p99_5[0] == pytest.approx(np.percentile(voxels, 99.5), rel=0.02)


def test_ingest_on_two_worker_processes(tmp_path):
    root, _ = tiff_root(tmp_path / "raw", n=4)
    result = run(root, tmp_path / "ds", workers=2, processes=True, crops=(6, 10, 12))
    assert result.samples == 4 and verify_dataset(tmp_path / "ds").ok


def damage_slice_shape(root):
    tifffile.imwrite(root / "s1/raw/slice_5.tif", np.zeros((7, 7), np.uint16))


def damage_empty(root):
    for p in (root / "s1/raw").iterdir():
        p.unlink()


def damage_no_raw(root):
    (root / "s1/raw").rename(root / "s1/images")


def damage_2d(root):
    for p in sorted((root / "s1/raw").iterdir())[1:]:
        p.unlink()


def damage_mask_shape(root):
    for p in (root / "s1/mask").iterdir():
        tifffile.imwrite(p, np.zeros((20, 23), np.uint8))


def damage_float_mask(root):
    for p in (root / "s1/mask").iterdir():
        tifffile.imwrite(p, np.full((20, 24), 0.5, np.float32))


def damage_nan(root):
    image = np.ones((12, 20, 24), np.float32)
    image[3, 4, 5] = np.nan
    for p in (root / "s1/raw").iterdir():
        p.unlink()
    write_slices(root / "s1/raw", image)


def damage_no_row(root):
    write_table(
        root / "classes.csv", ["sample_id", "class"], [["s0", "a"], ["s2", "a"], ["s3", "b"]]
    )


def damage_no_files(root):
    write_table(
        root / "classes.csv",
        ["sample_id", "class"],
        [["s0", "a"], ["s1", "b"], ["s2", "a"], ["s3", "b"], ["s9", "a"]],
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            damage_slice_shape,
            r"s1/raw: slices differ in shape: slice_0\.tif is \(20, 24\), slice_5\.tif is \(7, 7\)",
        ),
        (damage_empty, r"s1/raw: the slice folder holds no TIFF files"),
        (damage_no_raw, r"s1: has no raw/ slice folder"),
        (damage_2d, r"s1/raw: holds one 2D slice, not a volume"),
        (
            damage_mask_shape,
            r"s1: mask shape \(12, 20, 23\) differs from image shape \(12, 20, 24\)",
        ),
        (damage_float_mask, r"s1: the mask holds non-integer values"),
        (damage_nan, r"s1: holds 1 NaN or Inf voxels"),
        (damage_no_row, r"s1: the sample has no row in .*classes\.csv"),
        (damage_no_files, r"classes\.csv row 5: sample 's9' has no folder or stack"),
    ],
    ids=[
        "slice-shapes",
        "empty-folder",
        "no-raw-folder",
        "2d-as-volume",
        "mask-shape",
        "float-mask",
        "nan",
        "no-row",
        "row-without-files",
    ],
)
def test_bad_stacks_are_refused_and_nothing_is_written(tmp_path, damage, message):
    root, _ = tiff_root(tmp_path / "raw")
    damage(root)
    with pytest.raises(BadInputError, match=message):
        run(root, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_skip_ingests_the_good_stacks(tmp_path):
    root, _ = tiff_root(tmp_path / "raw")
    damage_slice_shape(root)
    result = run(root, tmp_path / "ds", on_error="skip")
    assert result.samples == 3 and result.card.rejected == 1
    assert verify_dataset(tmp_path / "ds").ok
