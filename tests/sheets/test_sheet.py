"""Contact sheets of every dataset kind, as stored and as the loader yields them: the PNG
has the size of its layout and is not blank; draws are reproducible; bad requests are
refused in one sentence."""

import numpy as np
import pytest
from PIL import Image

from medshard.errors import DatasetError
from medshard.loaders import build_loader
from medshard.shards.foreground import read_foreground
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from medshard.sheets import render_sheet
from medshard.sheets.batches import loader_tiles
from medshard.sheets.figure import DPI, sheet_layout
from medshard.sheets.stored import pick_rows, stored_tiles


def check_png(sheet, rows: int, cols: int) -> np.ndarray:
    """The PNG has the size its layout gives and holds a picture, not a blank page."""
    with Image.open(sheet.path) as png:
        assert png.format == "PNG"
        assert png.size == (sheet.width, sheet.height)
        pixels = np.asarray(png.convert("L"), np.float32)
    _, width, height = sheet_layout(len(sheet.keys), rows, cols)
    assert (sheet.width, sheet.height) == (round(width * DPI), round(height * DPI))
    assert (pixels < 250).mean() > 0.1 and pixels.std() > 20
    return pixels


def test_real_tiles_show_stored_images_with_their_training_copies(tiles_dataset, tmp_path):
    sheet = render_sheet(tiles_dataset, tmp_path / "tiles.png", show=9)
    assert len(sheet.keys) == 9
    check_png(sheet, rows=1, cols=2)


def test_16_bit_rgb_and_gray_tiles_keep_their_contrast_beside_8_bit(tiles_dataset):
    ds = open_dataset(tiles_dataset)
    tiles = {t.key: t for t in stored_tiles(ds, pick_rows(ds, 64, None, (), 0))}
    for key in ("astronaut_rgb16", "chelsea_rgb16", "cell_gray16", "moon_gray16"):
        stored, copy = tiles[key].rows[0]
        assert "uint16 [" in stored.title and "training copy 40x40" in copy.title
        # the window spreads the values over the whole display range, few at either end
        shown = stored.image
        assert shown.max() - shown.min() > 0.9 and shown.std() > 0.03
        assert (shown >= 1.0).mean() < 0.05 and (shown <= 0.0).mean() < 0.05
    for key in ("astronaut_rgb16", "chelsea_rgb16"):  # PNG and TIFF
        assert tiles[key].rows[0][0].image.shape == (64, 64, 3)
    assert tiles["camera_gray8"].rows[0][0].title.endswith("8-bit")
    assert tiles["astronaut_rgba8"].rows[0][0].image.shape == (64, 64, 3)  # alpha left out


def test_draws_are_reproducible_and_follow_the_seed(tiles_dataset):
    ds = open_dataset(tiles_dataset)
    draws = [tuple(r["key"] for r in pick_rows(ds, 4, None, (), seed)) for seed in range(5)]
    assert draws[0] == tuple(r["key"] for r in pick_rows(ds, 4, None, (), 0))
    assert len(set(draws)) > 1
    val = {r["key"] for r in ds.manifest.to_pylist() if r["split"] == "val"}
    assert {r["key"] for r in pick_rows(ds, 64, "val", (), 3)} == val


def test_real_mri_planes_pass_through_the_foreground_with_the_mask(mri_dataset, tmp_path):
    sheet = render_sheet(mri_dataset, tmp_path / "mri.png", show=3)
    assert sheet.keys == ("anatomical", "reoriented", "standard")
    check_png(sheet, rows=3, cols=1)
    ds = open_dataset(mri_dataset)
    (tile,) = stored_tiles(ds, pick_rows(ds, 1, None, ("anatomical",), 0))
    z, y, x = np.rint(
        np.concatenate(list(read_foreground(mri_dataset)["anatomical"].values())).mean(0)
    )
    axial, coronal, sagittal = (row[0] for row in tile.rows)
    assert f"axial z={int(z)}" in axial.title and f"coronal y={int(y)}" in coronal.title
    assert f"sagittal x={int(x)}" in sagittal.title
    assert all(p.mask is not None and p.mask.any() for p in (axial, coronal, sagittal))
    assert axial.image.shape == (41, 33) and axial.origin == "lower"  # RAS: anterior up
    assert verify_dataset(mri_dataset).ok  # nothing written into the dataset


def test_each_modality_has_its_own_column_and_the_target_its_caption(
    two_modality_dataset, tmp_path
):
    sheet = render_sheet(two_modality_dataset, tmp_path / "sub.png", show=2, seed=1)
    check_png(sheet, rows=3, cols=2)
    ds = open_dataset(two_modality_dataset)
    (tile,) = stored_tiles(ds, pick_rows(ds, 1, None, ("sub2",), 0))
    assert [p.title.split(":")[0] for p in tile.rows[0]] == ["t1", "t2"]
    assert tile.caption == "sub2\nage=50"
    # canonical affine diag(1, 1.5, 2): spacing (z, y, x) = (2, 1.5, 1)
    assert [row[0].aspect for row in tile.rows] == [1.5, 2.0, 2.0 / 1.5]


def test_stored_crops_and_clips_can_be_named(mri_dataset, video_dataset, tmp_path):
    crop = render_sheet(mri_dataset, tmp_path / "c.png", keys=("anatomical_z0_y0_x0", "standard"))
    assert crop.keys == ("anatomical_z0_y0_x0", "standard")
    check_png(crop, rows=3, cols=1)
    clip = render_sheet(video_dataset, tmp_path / "v.png", keys=("a_t8",))
    check_png(clip, rows=1, cols=8)


@pytest.mark.parametrize("dataset", ["video_dataset", "rgb_video_dataset"])
def test_videos_show_evenly_spaced_frames_with_their_timestamps(dataset, request, tmp_path):
    path = request.getfixturevalue(dataset)
    sheet = render_sheet(path, tmp_path / "video.png", show=4)
    assert sheet.keys == ("a", "b")  # whole videos, not their clips
    check_png(sheet, rows=1, cols=8)
    ds = open_dataset(path)
    tile_a, tile_b = stored_tiles(ds, pick_rows(ds, 2, None, (), 0))
    titles = [p.title.split("\n")[0] for p in tile_a.rows[0]]
    assert titles == [
        "0.00 s",
        "0.40 s",
        "0.90 s",
        "1.30 s",
        "1.70 s",
        "2.10 s",
        "2.60 s",
        "3.00 s",
    ]
    assert tile_b.rows[0][-1].title == "2.00 s" and tile_b.caption == "b\nno"
    shape = (64, 80, 3) if dataset == "rgb_video_dataset" else (64, 80)
    assert tile_a.rows[0][0].image.shape == shape


@pytest.mark.parametrize(
    ("dataset", "rows", "cols", "options"),
    [
        ("tiles_dataset", 1, 1, {}),
        ("mri_dataset", 3, 1, {"patch_size": (12, 16, 20)}),  # random patches from Zarr
        ("two_modality_dataset", 3, 2, {"patch_size": (8, 10, 6)}),  # two channels
        ("video_dataset", 1, 8, {"clip_len": 6}),  # clips from Zarr at random starts
    ],
)
def test_loader_batches_show_what_training_sees(dataset, rows, cols, options, request, tmp_path):
    path = request.getfixturevalue(dataset)
    sheet = render_sheet(path, tmp_path / "batch.png", show=5, loader=True, seed=3)
    check_png(sheet, rows=rows, cols=cols)
    again = render_sheet(path, tmp_path / "again.png", show=5, loader=True, seed=3)
    assert again.keys == sheet.keys

    ds = open_dataset(path)
    tiles = loader_tiles(ds, "train", 2, 3, options=options)
    batch = next(
        iter(
            build_loader(
                ds, "train", batch_size=2, seed=3, num_workers=0, backend="torch",
                device="cpu", rank=0, world_size=1, **options,
            )
        )
    )  # fmt: skip
    assert [t.key for t in tiles] == list(batch["key"])
    image = batch["image"][0]
    first = tiles[0].rows[0][0]
    if ds.card.kind == "images":  # (C, H, W): RGB or gray panels
        assert first.image.shape == (*image.shape[1:], 3)[: 2 + (image.shape[0] == 3)]
    elif ds.card.kind == "volumes":  # (C, z, y, x): the axial plane is (y, x)
        assert first.image.shape == tuple(image.shape[2:]) and len(tiles[0].rows[0]) == cols
    else:  # (T, C, H, W): up to 8 frames of (H, W)
        assert len(tiles[0].rows[0]) == min(8, image.shape[0])
        assert first.image.shape == tuple(image.shape[2:])
    assert all("float32 [" in t.rows[0][0].title for t in tiles)  # normalised values


def test_loader_sheets_take_a_training_augmentation_and_patch_size(mri_dataset, tmp_path):
    sheet = render_sheet(
        mri_dataset,
        tmp_path / "aug.png",
        show=4,
        loader=True,
        augment={"flip_axes": [0, 1, 2], "gamma": [0.8, 1.25]},
        loader_options={"patch_size": (8, 12, 12), "foreground_prob": 1.0},
    )
    check_png(sheet, rows=3, cols=1)
    assert all("#" in key for key in sheet.keys)  # random patches of the Zarr volumes


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"show": 0}, "a sheet shows 1 to 64 samples, not 0"),
        ({"show": 65}, "a sheet shows 1 to 64 samples, not 65"),
        ({"keys": ("nope",)}, "no sample 'nope'"),
        ({"keys": ("camera_gray8",), "split": "val"}, "no sample 'camera_gray8' in split 'val'"),
        ({"split": "test"}, "no split 'test'; the splits are train, val"),
        ({"keys": ("camera_gray8",), "loader": True}, "named keys show stored samples"),
        ({"loader": True, "augment": {"flip_axes": [0]}}, "does not fit Augment2D"),
    ],
)
def test_bad_requests_are_refused_in_one_sentence(tiles_dataset, tmp_path, options, message):
    with pytest.raises(DatasetError, match=message):
        render_sheet(tiles_dataset, tmp_path / "s.png", **options)
    assert not (tmp_path / "s.png").exists()


def test_a_sheet_is_never_written_into_the_dataset_nor_as_another_format(tiles_dataset, tmp_path):
    inside = tiles_dataset / "sheet.png"
    with pytest.raises(DatasetError, match="not written inside the dataset"):
        render_sheet(tiles_dataset, inside)
    assert not inside.exists()
    with pytest.raises(DatasetError, match="saved as PNG"):
        render_sheet(tiles_dataset, tmp_path / "sheet.jpg")


def test_a_sheet_never_writes_over_a_picture_but_may_redraw_itself(tmp_path):
    from medshard.errors import DatasetError
    from medshard.sheets import render_sheet
    from tests.conftest import ingest
    from tests.real_data import mixed_tile_table

    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage")
    source = tmp_path / "raw" / "batch0" / "camera_gray8.png"
    before = source.read_bytes()
    with pytest.raises(DatasetError, match="exists and is not a medshard sheet, so it is never"):
        render_sheet(tmp_path / "ds", source, show=2)
    assert source.read_bytes() == before
    sheet = tmp_path / "sheet.png"
    render_sheet(tmp_path / "ds", sheet, show=2)
    render_sheet(tmp_path / "ds", sheet, show=3)  # its own sheet: drawn again
    assert sheet.stat().st_size > 1000
