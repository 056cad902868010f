"""The resize kernel on a real photograph: integers resized as integers (torch's uint8
kernel inside, the filter's own taps where it reaches past the border), floats to the
filter's taps everywhere, label maps by the pixel under each output centre."""

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from medshard.loaders.resample import border_outputs, resample_axis, resize, resize_nearest

PHOTO = torch.from_numpy(skimage.data.astronaut()[:200, 100:280].copy()).permute(2, 0, 1)
SIZES = [(224, 224), (150, 96), (64, 64), (17, 23), (200, 300), (90, 180)]


def by_taps(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The filter applied tap by tap in float64: the definition."""
    x = image.double()
    return resample_axis(resample_axis(x, -2, size[0]), -1, size[1])


@pytest.mark.parametrize("size", SIZES)
def test_eight_bit_images_are_resized_as_integers_within_one_level_of_the_filter(size):
    got = resize(PHOTO, size)
    expected = by_taps(PHOTO, size)
    assert got.dtype == torch.uint8 and got.shape == (3, *size)
    # rounded twice (torch rounds between its two passes): within one level
    assert (got.double() - expected).abs().max() < 1.01
    rows, cols = border_outputs(200, size[0]), border_outputs(180, size[1])
    for name, edge in (("rows", (slice(None), rows, slice(None))), ("cols", (..., cols))):
        if len(rows if name == "rows" else cols):
            assert (got[edge].double() - expected[edge].round()).abs().max() <= 1


def test_the_border_repeats_the_edge_pixel_where_torch_would_renormalise():
    edge = torch.zeros(1, 64, 64, dtype=torch.uint8)
    edge[..., 0] = 255  # a bright first column: its weight decides the border
    size = (40, 40)
    renormalised = F.interpolate(edge[None], size=size, mode="bilinear", antialias=True)[0]
    got, expected = resize(edge, size), by_taps(edge, size)
    assert (renormalised[..., 0].double() - expected[..., 0]).abs().max() > 10
    assert (got.double() - expected).abs().max() < 1.01


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint16, torch.int16])
def test_other_types_are_resized_in_float_and_keep_their_type(dtype):
    image = PHOTO.to(torch.int32).mul(100).to(dtype) if dtype != torch.float32 else PHOTO / 255.0
    size = (150, 96)
    got = resize(image, size)
    expected = by_taps(image, size)
    assert got.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 0.5 + 1e-5 * 25500  # float32 sums
    assert (got.double() - expected).abs().max() <= tolerance


def test_a_clip_is_resized_frame_by_frame():
    clip = torch.stack([PHOTO, PHOTO.flip(-1)])
    got = resize(clip, (64, 80))
    assert torch.equal(got[0], resize(PHOTO, (64, 80)))
    assert torch.equal(got[1], resize(PHOTO.flip(-1), (64, 80)))


def test_the_same_size_is_returned_untouched():
    assert resize(PHOTO, (200, 180)) is PHOTO


def test_labels_take_the_pixel_under_each_output_centre():
    labels = torch.arange(12).view(3, 4)
    assert resize_nearest(labels, (6, 8)).tolist()[0] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resize_nearest(labels, (3, 2)).tolist() == [[1, 3], [5, 7], [9, 11]]
    assert np.array_equal(resize_nearest(labels, (3, 4)).numpy(), labels.numpy())
