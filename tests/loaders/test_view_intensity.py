"""The views' intensity steps checked by hand (jitter, blur, solarisation), each view's
probabilities, and the settings refused."""

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from medshard.loaders.view_intensity import (
    ViewPipeline,
    draw_view,
    gaussian_blur,
    view_generator,
    view_intensity,
)


def test_solarisation_turns_values_from_one_half_up_and_jitter_is_contrast_then_brightness():
    views = torch.tensor([0.2, 0.5, 0.7, 0.9]).view(1, 1, 1, 4).repeat(2, 1, 1, 1)
    params = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 0.1, 0.0, 0.0]])
    out = view_intensity(views, params, 1, None)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.2, 0.5, 0.3, 0.1]))
    jittered = [(v - 0.5) * 2.0 + 0.6 for v in (0.2, 0.5, 0.7, 0.9)]
    assert torch.allclose(out[1, 0, 0], torch.tensor(jittered).clamp(0, 1))


def test_blur_is_a_normalised_gaussian_per_image_and_sigma_zero_leaves_it():
    delta = torch.zeros(2, 1, 9, 9)
    delta[:, :, 4, 4] = 1.0
    blurred = gaussian_blur(delta, torch.tensor([1.5, 0.0]), radius=4)
    taps = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    taps /= taps.sum()
    assert np.allclose(blurred[0, 0].numpy(), np.outer(taps, taps), atol=1e-6)
    assert torch.equal(blurred[1], delta[1])


def test_each_view_has_its_own_probabilities():
    pipeline = ViewPipeline(blur_prob=(1.0, 0.0), solarize_prob=(0.0, 1.0), jitter_prob=0.0)
    for index in range(20):
        first = draw_view(pipeline, 0, view_generator(0, 0, index, 0))
        second = draw_view(pipeline, 1, view_generator(0, 0, index, 1))
        assert first[:2] == [1.0, 0.0] and 0.1 <= first[2] <= 2.0 and first[3] == 0.0
        assert second[2] == 0.0 and second[3] == 1.0
    blur_half = ViewPipeline(blur_prob=(0.5, 0.5))
    blurred = [draw_view(blur_half, 0, view_generator(0, 0, i, 0))[2] > 0 for i in range(400)]
    assert math.isclose(sum(blurred) / 400, 0.5, abs_tol=0.1)


def test_settings_that_mean_nothing_are_refused():
    with pytest.raises(ValidationError, match=r"blur_prob holds a probability per view"):
        ViewPipeline(blur_prob=(1.5, 0.1))
    with pytest.raises(ValidationError, match=r"blur_sigma must satisfy 0 < low <= high"):
        ViewPipeline(blur_sigma=(2.0, 1.0))
