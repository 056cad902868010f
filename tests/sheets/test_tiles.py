"""Panels from arrays: display windows, orthogonal planes in physical aspect, frame strips
and captions."""

import numpy as np
import pytest

from medshard.sheets.tiles import (
    caption,
    display_window,
    frame_indices,
    frames_tile,
    image_panel,
    orthogonal_centre,
    volume_tile,
)


def test_8_bit_is_shown_as_stored_and_16_bit_in_a_percentile_window():
    assert display_window(np.array([[3, 200]], np.uint8))[:2] == (0.0, 255.0)
    values = np.arange(1000, 61000, dtype=np.uint16)
    low, high, note = display_window(values)
    assert low == pytest.approx(np.percentile(values, 0.5))
    assert high == pytest.approx(np.percentile(values, 99.5))
    assert note.startswith("uint16 [")


def test_16_bit_contrast_survives_where_an_8_bit_clip_would_show_white():
    rng = np.random.default_rng(0)
    image = rng.integers(20000, 40000, (32, 32, 3)).astype(np.uint16)
    panel = image_panel(image)
    assert np.clip(image, 0, 255).min() == 255  # cut to 8 bits: every pixel white
    assert panel.image.shape == (32, 32, 3)
    assert panel.image.std() > 0.2 and (panel.image >= 1.0).mean() < 0.05


def test_a_flat_or_non_finite_image_still_gets_a_window():
    low, high, _ = display_window(np.full((4, 4), 7, np.uint16))
    assert high > low
    panel = image_panel(np.array([[np.nan, 1.0], [2.0, np.inf]], np.float32))
    assert np.isfinite(panel.image).all()


@pytest.mark.parametrize(
    ("shape", "expected"), [((5, 6), (5, 6)), ((5, 6, 2), (5, 6)), ((5, 6, 4), (5, 6, 3))]
)
def test_gray_alpha_and_rgba_drop_their_alpha(shape, expected):
    assert image_panel(np.zeros(shape, np.uint8)).image.shape == expected


def test_large_images_are_averaged_down_before_display():
    panel = image_panel(np.ones((3000, 1500), np.uint16))
    assert max(panel.image.shape) <= 1024


def test_the_centre_is_the_mean_foreground_coordinate_else_the_middle():
    coords = np.array([[1, 2, 3], [3, 4, 5]])
    assert orthogonal_centre((10, 10, 10), coords) == (2, 3, 4)
    mask = np.zeros((6, 8, 10), bool)
    mask[4, 6, 8] = True
    assert orthogonal_centre((6, 8, 10), mask) == (4, 6, 8)
    assert orthogonal_centre((6, 8, 10), np.zeros((0, 3))) == (3, 4, 5)
    assert orthogonal_centre((6, 8, 10), None) == (3, 4, 5)


def test_three_planes_per_channel_through_the_centre_in_physical_aspect():
    z, y, x = np.meshgrid(np.arange(6), np.arange(8), np.arange(10), indexing="ij")
    image = np.stack([100 * z + 10 * y + x, -(100 * z + 10 * y + x)]).astype(np.float32)
    mask = (z == 2).astype(np.uint8)
    tile = volume_tile(
        image,
        mask,
        spacing=(3.0, 1.0, 0.5),
        centre=(2, 3, 4),
        channel_names=["t1", "t2"],
        anatomical=True,
        text="k",
    )
    assert [len(row) for row in tile.rows] == [2, 2, 2]  # planes down, channels across
    axial, coronal, sagittal = (row[0] for row in tile.rows)
    assert axial.image.shape == (8, 10) and axial.aspect == 2.0  # (y, x): 1.0 / 0.5
    assert coronal.image.shape == (6, 10) and coronal.aspect == 6.0  # (z, x): 3.0 / 0.5
    assert sagittal.image.shape == (6, 8) and sagittal.aspect == 3.0  # (z, y): 3.0 / 1.0
    assert np.array_equal(axial.mask, mask[2]) and np.array_equal(sagittal.mask, mask[:, :, 4])
    assert axial.origin == "lower" and "t1: axial z=2" in axial.title
    assert "t2: coronal y=3" in tile.rows[1][1].title
    # the second channel is the first negated: its window turns it the other way
    assert np.allclose(tile.rows[0][1].image, 1 - tile.rows[0][0].image, atol=0.02)


def test_microscope_volumes_keep_rows_going_down():
    tile = volume_tile(
        np.zeros((1, 3, 4, 5)),
        None,
        spacing=None,
        centre=(1, 2, 2),
        channel_names=[],
        anatomical=False,
        text="k",
    )
    assert {p.origin for row in tile.rows for p in row} == {"upper"}
    assert all(p.mask is None and p.aspect == 1.0 for row in tile.rows for p in row)
    assert tile.rows[0][0].title.startswith("channel 0: yx z=1")


@pytest.mark.parametrize(
    ("frames", "wanted", "expected"),
    [(31, 8, [0, 4, 9, 13, 17, 21, 26, 30]), (3, 8, [0, 1, 2]), (1, 8, [0]), (0, 8, [])],
)
def test_frames_are_spread_from_the_first_to_the_last(frames, wanted, expected):
    assert frame_indices(frames, wanted) == expected


def test_a_strip_shares_one_window_and_carries_its_titles():
    frames = np.stack([np.full((4, 5), 1000 * t, np.uint16) for t in range(5)])
    tile = frames_tile(frames, [0, 2, 4], ["0.0 s", "0.2 s", "0.4 s"], "clip")
    (row,) = tile.rows
    assert [p.title.split("\n")[0] for p in row] == ["0.0 s", "0.2 s", "0.4 s"]
    assert row[0].image.max() < row[1].image.min() < row[2].image.min()


def test_captions_name_the_class_the_classes_or_the_target():
    names = ["cleavage", "morula", "blastocyst"]
    assert caption("k", names, None, label=2) == "k\nblastocyst"
    assert caption("k", names, None, labels=[1, 0, 1]) == "k\ncleavage+blastocyst"
    assert caption("k", names, None, labels=[0, 0, 0]) == "k\nnone"
    assert caption("k", [], "age", target=41.5) == "k\nage=41.5"
    assert caption("k", [], None) == "k"


def test_8_bit_volumes_are_stretched_to_their_own_intensities():
    image = np.zeros((1, 4, 4, 4), np.uint8)
    image[0, :, :, 2:] = 9  # a scanner's small integers, nearly black as stored
    tile = volume_tile(
        image, None, spacing=None, centre=(2, 2, 2), channel_names=[], anatomical=False, text="k"
    )
    axial = tile.rows[0][0]
    assert axial.image.min() == 0.0 and axial.image.max() == 1.0
    assert "uint8 [0, 9]" in axial.title


def test_volumes_stored_as_int16_codes_are_shown_in_their_own_units():
    codes = np.array([[[[-32767, 0], [0, 32767]]]], np.int16)  # (1, 1, 2, 2)
    intensity = {"scale": [0.5 / 32767], "offset": [2.0]}  # values 1.5 .. 2.5
    tile = volume_tile(
        codes,
        None,
        spacing=None,
        centre=(0, 0, 0),
        channel_names=[],
        anatomical=False,
        text="k",
        intensity=intensity,
    )
    axial = tile.rows[0][0]
    low, high = (float(v) for v in axial.title.split("float32 [")[1].rstrip("]").split(", "))
    assert 1.5 <= low < 1.51 and 2.45 < high <= 2.5  # values, not codes
    assert axial.image.min() == 0.0 and axial.image.max() == 1.0
