"""3D augmentation: draws, the write-through view, the affine, and the intensity plan on
both backends."""

import itertools

import numpy as np
import pytest
import torch

from medshard.loaders.augment3d import (
    Augment3D,
    Draw3D,
    draw_3d,
    intensity_plan,
    orient,
    resample,
    run_plan,
    write_view,
)

STATS = {"mean": [100.0, 5.0], "std": [20.0, 2.0], "p0_5": [60.0, 1.0], "p99_5": [150.0, 9.0]}


def patch(shape=(2, 6, 7, 7), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 30, shape).astype(np.float32)


def draws(config: Augment3D, count: int = 200, shape=(8, 8, 8)) -> list[Draw3D]:
    return [draw_3d(config, torch.Generator().manual_seed(i), shape) for i in range(count)]


def test_a_transform_applies_with_its_probability():
    never = draws(Augment3D(gamma=(0.5, 2.0), gamma_p=0.0, noise_std=0.1, noise_p=0.0))
    assert all(d.gamma is None and d.noise_seed is None for d in never)
    always = draws(Augment3D(gamma=(0.5, 2.0), contrast=(0.8, 1.2)))
    assert all(d.gamma is not None and d.contrast is not None for d in always)
    some = sum(d.gamma is not None for d in draws(Augment3D(gamma=(0.5, 2.0), gamma_p=0.3)))
    assert 30 < some < 90  # about 60 of 200
    assert draw_3d(Augment3D(flip_axes=(0, 1, 2), gamma=(0.5, 2)), None, (8, 8, 8)) == Draw3D()


def test_turning_one_transform_on_leaves_the_others_draws_alone():
    base = draws(Augment3D(flip_axes=(0, 1, 2), rot90_xy=True))
    more = draws(Augment3D(flip_axes=(0, 1, 2), rot90_xy=True, gamma=(0.5, 2.0), zoom=(1, 2)))
    assert [(d.flips, d.turns) for d in base] == [(d.flips, d.turns) for d in more]


def test_quarter_turns_only_where_y_and_x_match():
    turns = {d.turns for d in draws(Augment3D(rot90_xy=True), shape=(8, 6, 7))}
    assert turns <= {0, 2} and 2 in turns


@pytest.mark.parametrize("turns", range(4))
@pytest.mark.parametrize("flips", [(), (0,), (2,), (0, 1, 2)])
def test_writing_through_the_view_leaves_the_oriented_patch(flips, turns):
    source = patch(shape=(2, 5, 6, 6))
    draw = Draw3D(flips=flips, turns=turns)
    slot = np.zeros_like(source)
    write_view(slot, draw)[...] = source
    assert np.array_equal(slot, orient(source, draw))
    assert torch.equal(torch.from_numpy(slot), orient(torch.from_numpy(source), draw))


def test_an_affine_of_a_quarter_turn_equals_the_turn_and_keeps_image_and_mask_aligned():
    image = torch.from_numpy(patch(shape=(1, 5, 5, 5)))
    mask = (image[0] > 100).to(torch.uint8)
    quarter = Draw3D(affine=((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0)))
    moved, moved_mask = resample(image, mask, quarter)
    turned = torch.rot90(image, 1, dims=(-2, -1))
    assert torch.allclose(moved, turned, atol=1e-4)  # on the grid: linear is exact
    assert torch.equal(moved_mask, (moved[0] > 100).to(torch.uint8))  # one grid for both
    assert resample(image, mask, Draw3D()) == (image, mask)


def test_zoom_scales_about_the_patch_centre():
    ramp = torch.arange(9, dtype=torch.float32).view(1, 9, 1, 1).expand(1, 9, 3, 3).clone()
    zoomed, _ = resample(ramp, None, Draw3D(affine=((0.5, 0, 0), (0, 1, 0), (0, 0, 1))))
    assert torch.allclose(zoomed[0, :, 1, 1], 2 + 0.5 * torch.arange(9.0), atol=1e-4)
    affine = np.asarray(draws(Augment3D(zoom=(1.5, 1.5)))[0].affine)
    assert np.allclose(affine, np.eye(3) / 1.5)  # a factor above 1 magnifies


@pytest.mark.parametrize(
    "draw",
    [
        Draw3D(),
        Draw3D(gamma=1.4),
        Draw3D(contrast=0.8),
        Draw3D(gamma=0.7, contrast=1.2, noise_seed=11),
    ],
)
@pytest.mark.parametrize("normalize", ["card", "zscore", "none"])
def test_the_plan_gives_the_same_values_in_numpy_and_torch(draw, normalize):
    config = Augment3D(normalize=normalize, noise_std=0.1)
    plan = intensity_plan(config, draw, STATS, channels=2)
    values = patch()
    in_numpy = run_plan(values.copy(), plan)
    in_torch = run_plan(torch.from_numpy(values.copy()), plan)
    assert np.allclose(in_numpy, in_torch.numpy(), rtol=1e-5, atol=1e-5)


def test_stored_levels_and_their_scale_give_the_real_values_plan():
    real = patch()
    scale, offset = np.array([0.01, 0.002]), np.array([100.0, 5.0])
    levels = ((real - offset[:, None, None, None]) / scale[:, None, None, None]).astype(np.float32)
    for draw, normalize in itertools.product([Draw3D(), Draw3D(gamma=1.3)], ["card", "none"]):
        config = Augment3D(normalize=normalize)
        storage = list(zip(scale, offset))
        from_levels = run_plan(levels.copy(), intensity_plan(config, draw, STATS, storage, 2))
        from_real = run_plan(real.copy(), intensity_plan(config, draw, STATS, None, 2))
        assert np.allclose(from_levels, from_real, rtol=1e-4, atol=1e-3)
