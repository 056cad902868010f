"""The 2D chain is defined once: for the same image and the same drawn parameters, its
torch and DALI operations give the same output; DALI's training draws stay within what
the chain allows (no quarter turn of a non-square image)."""

import itertools

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from medshard.loaders import Augment2D, build_loader, dali_available
from medshard.loaders.chain2d import (
    Crop,
    QuarterTurns,
    RandomResizedCrop,
    Resize,
    chain_2d,
    crop_anchor,
    fold_intensity,
)

needs_dali = pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only")

# A non-square patch of a real RGB photograph, in unit scale.
PHOTO = skimage.data.astronaut()[40:110, 150:240].astype(np.float32) / 255  # 70 x 90 x 3
STATS = ([0.4, 0.35, 0.3], [0.25, 0.2, 0.22])
FULL = dict(flip_h=True, flip_v=True, rot90=True, contrast=0.3, brightness=0.2)
CONFIGS = {
    "shrink-crop-odd-slack": Augment2D(resize=(40, 56), random_crop=(31, 47), **FULL),
    "grow-square-crop": Augment2D(
        resize=(96, 120), random_crop=(64, 64), normalize="imagenet", **FULL
    ),
    "no-resize-non-square": Augment2D(random_crop=(60, 80), **FULL),
}
# Drawn parameters, one dict per transform of the chain (crop, flip, turns, jitter).
PARAMETERS = {
    "evaluation": [{"y": 0.5, "x": 0.5}, {"h": 0, "v": 0}, {"k": 0}, {"c": 1.0, "b": 0.0}],
    "corner": [{"y": 0.0, "x": 1.0}, {"h": 1, "v": 0}, {"k": 1}, {"c": 1.3, "b": -0.2}],
    "halves": [{"y": 0.3, "x": 0.7}, {"h": 0, "v": 1}, {"k": 3}, {"c": 0.7, "b": 0.15}],
    "both-flips": [{"y": 0.9, "x": 0.1}, {"h": 1, "v": 1}, {"k": 2}, {"c": 1.0, "b": 0.05}],
}


def run_dali(image: np.ndarray, chain, params: list[dict]) -> np.ndarray:
    """The chain's DALI operators on one HWC image, with parameters fixed."""
    image = np.ascontiguousarray(image)
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=0)
    def pipeline():
        x = fn.external_source(source=lambda: [image], batch=True, layout="HWC")
        for transform, values in zip(chain, params):
            x = transform.dali(x, **values)
        return x

    pipe = pipeline()
    pipe.build()
    (out,) = pipe.run()
    return np.array(out.as_tensor())[0]


def run_torch(image: np.ndarray, chain, params: list[dict]) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)
    for transform, values in zip(chain, params):
        x = transform.torch(x, **values)
    return x.permute(1, 2, 0).numpy()


def with_normalize(params: list[dict]) -> list[dict]:
    return [*params, {}]  # the resize first and the normalisation last take no parameters


@needs_dali
@pytest.mark.parametrize("drawn", sorted(PARAMETERS))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_both_backends_give_the_same_output_for_the_same_parameters(name, drawn):
    config = CONFIGS[name]
    chain = chain_2d(config, PHOTO.shape[:2], 3, STATS)
    params = ([{}] if config.resize else []) + with_normalize(PARAMETERS[drawn])
    assert [type(t).__name__ for t in chain] == (["Resize"] if config.resize else []) + [
        "Crop",
        "Flip",
        "QuarterTurns",
        "Jitter",
        "Normalize",
    ]
    expected = run_torch(PHOTO, chain, params)
    got = run_dali(PHOTO, chain, params)
    assert got.shape == expected.shape == (*config.random_crop, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4)


@needs_dali
def test_a_drawn_quarter_turn_of_a_non_square_image_is_a_half_turn_in_both():
    chain = chain_2d(Augment2D(rot90=True, normalize="none"), PHOTO.shape[:2], 3, None)
    (turns,) = chain
    assert isinstance(turns, QuarterTurns) and not turns.square
    for k in range(4):
        expected = np.rot90(PHOTO, 2 * (k % 2))
        np.testing.assert_array_equal(run_torch(PHOTO, chain, [{"k": k}]), expected)
        np.testing.assert_array_equal(run_dali(PHOTO, chain, [{"k": k}]), expected)


def test_crop_anchors_round_halves_up_as_dali_does():
    assert [crop_anchor(f, 9) for f in (0.0, 0.5, 0.3, 0.7, 1.0)] == [0, 5, 3, 6, 9]
    assert crop_anchor(0.7, 5) == 3  # 0.7 as a float32 is just below 0.7
    image = torch.arange(20.0).view(1, 4, 5)
    assert Crop((2, 2)).torch(image, y=0.5, x=0.5).flatten().tolist() == [7.0, 8.0, 12.0, 13.0]


@needs_dali
@pytest.mark.parametrize("slack", [3, 5, 9])
def test_crops_start_at_the_same_pixel_in_both(slack):
    crop = Crop((8, 8))
    image = PHOTO[: 8 + slack, : 8 + slack]
    for y, x in itertools.product((0.1, 0.3, 0.5, 0.7, 0.9), repeat=2):
        expected = run_torch(image, [crop], [{"y": y, "x": x}])
        np.testing.assert_array_equal(run_dali(image, [crop], [{"y": y, "x": x}]), expected)


@pytest.mark.parametrize("size", [(96, 120), (70, 90), (40, 56), (23, 17)])
def test_resize_is_linear_inside_and_repeats_the_edge_pixels(size):
    image = torch.from_numpy(PHOTO).permute(2, 0, 1)
    got = Resize(size).torch(image)
    reference = F.interpolate(
        image[None], size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]
    assert got.shape == reference.shape == (3, *size)
    # torch's own antialiased resize agrees away from the border, where it renormalises
    torch.testing.assert_close(got[:, 2:-2, 2:-2], reference[:, 2:-2, 2:-2], atol=1e-5, rtol=0)
    flat = torch.full((1, 70, 90), 0.25)
    assert torch.allclose(Resize(size).torch(flat), torch.tensor(0.25))  # weights sum to 1


def test_parameters_are_drawn_in_order_from_the_sample_generator():
    (crop, flip, turns, jitter) = chain_2d(
        Augment2D(random_crop=(8, 8), **FULL | {"normalize": "none"}), (16, 16), 1, None
    )
    first = [t.params(torch.Generator().manual_seed(3)) for t in (crop, flip, turns, jitter)]
    again = [t.params(torch.Generator().manual_seed(3)) for t in (crop, flip, turns, jitter)]
    assert first == again
    assert [t.params(None) for t in (crop, flip, turns, jitter)] == PARAMETERS["evaluation"]
    generator = torch.Generator().manual_seed(0)
    draws = [jitter.params(generator) for _ in range(200)]
    assert all(0.7 <= d["c"] < 1.3 and -0.2 <= d["b"] < 0.2 for d in draws)
    assert {turns.params(generator)["k"] for _ in range(100)} == {0, 1, 2, 3}


@needs_dali
def test_dali_training_draws_only_what_the_torch_chain_can_give(mixed_tile_dataset):
    """Each DALI-augmented tile equals the torch chain applied to the same decoded tile
    with some allowed flip and turn: never a quarter turn of a non-square image."""
    size = (48, 64)
    plain = Augment2D(resize=size, normalize="none", channels=3)
    base = {
        key: image
        for batch in build_loader(
            mixed_tile_dataset,
            "train",
            batch_size=4,
            backend="torch",
            augment=plain,
            training=False,
            num_workers=0,
        )
        for key, image in zip(batch["key"], batch["image"])
    }
    augment = plain.model_copy(update={"flip_h": True, "flip_v": True, "rot90": True})
    (flip, turns) = chain_2d(augment, size, 3, None)[1:]
    choices = list(itertools.product((0, 1), (0, 1), range(4)))
    loader = build_loader(
        mixed_tile_dataset,
        "train",
        batch_size=4,
        backend="dali",
        augment=augment,
        device="cpu",
        seed=5,
    )
    drawn = set()
    for batch in loader:
        for key, image in zip(batch["key"], batch["image"]):
            assert image.shape == (3, *size)
            errors = [
                float((turns.torch(flip.torch(base[key], h=h, v=v), k=k) - image).abs().max())
                for h, v, k in choices
            ]
            best = int(np.argmin(errors))
            assert errors[best] < 0.02, (key, errors[best])  # decoders round alike
            drawn.add(choices[best][:2] + (turns.turns(choices[best][2]),))
    assert {t for *_, t in drawn} <= {0, 2} and len(drawn) > 2


# Random resized crops: (area, log ratio, y, x) drawn, then the rest of the chain.
RRC_PARAMETERS = {
    "evaluation": {"area": 1.0, "logratio": None, "y": 0.5, "x": 0.5},
    "small-wide": {"area": 0.2, "logratio": 0.25, "y": 0.1, "x": 0.8},
    "tall-corner": {"area": 0.5, "logratio": -0.2, "y": 1.0, "x": 0.0},
    "clamped": {"area": 1.0, "logratio": 0.28, "y": 0.4, "x": 0.6},  # wider than the image
}


def rrc_chain(size=(40, 48)):
    config = Augment2D(random_resized_crop=size, rrc_scale=(0.1, 1.0), **FULL)
    return config, chain_2d(config, None, 3, STATS)


@needs_dali
@pytest.mark.parametrize("drawn", sorted(RRC_PARAMETERS))
def test_both_backends_cut_and_resample_the_same_random_resized_crop(drawn):
    config, chain = rrc_chain()
    assert [type(t).__name__ for t in chain] == [
        "RandomResizedCrop",
        "Flip",
        "QuarterTurns",
        "Jitter",
        "Normalize",
    ]
    params = [RRC_PARAMETERS[drawn], *with_normalize(PARAMETERS["corner"][1:])]
    expected = run_torch(PHOTO, chain, params)
    got = run_dali(PHOTO, chain, params)
    assert got.shape == expected.shape == (40, 48, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_random_resized_crop_box_has_its_area_and_ratio_inside_the_image():
    box = RandomResizedCrop.box
    assert box(70, 90, **RRC_PARAMETERS["evaluation"]) == (0, 0, 70, 90)
    top, left, h, w = box(70, 90, **RRC_PARAMETERS["small-wide"])
    assert abs(h * w - 0.2 * 70 * 90) < h + w and abs(w / h - np.exp(0.25)) < 0.1
    assert (top, left) == (crop_anchor(0.1, 70 - h), crop_anchor(0.8, 90 - w))
    assert box(70, 90, **RRC_PARAMETERS["clamped"])[3] == 90  # never wider than the image
    generator = torch.Generator().manual_seed(0)
    rrc = RandomResizedCrop((8, 8), scale=(0.08, 1.0))
    for _ in range(200):
        top, left, h, w = box(30, 50, **rrc.params(generator))
        assert 0 <= top <= 30 - h and 0 <= left <= 50 - w and h >= 1 and w >= 1


def test_image_and_mask_share_one_random_resized_crop():
    """A mask of each pixel's source row and column, cut and resampled (nearest) with the
    image (a ramp of the same rows and columns, linear): both point at the same place."""
    rows, cols = torch.meshgrid(torch.arange(70.0), torch.arange(90.0), indexing="ij")
    image = torch.stack([rows, cols])  # 2 x 70 x 90: each pixel its own coordinates
    mask = (rows * 1000 + cols).long()
    rrc = RandomResizedCrop((32, 40))
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        params = rrc.params(generator)
        top, left, h, w = rrc.box(70, 90, **params)
        picked = rrc.label(mask, **params)
        assert picked.shape == (32, 40)
        source_rows, source_cols = picked // 1000, picked % 1000
        assert source_rows.min() >= top and source_rows.max() < top + h
        assert source_cols.min() >= left and source_cols.max() < left + w
        resampled = rrc.torch(image, **params)
        # the linear resample of a ramp is the ramp at each output centre: the nearest
        # pixel lies within half a source pixel (plus the edge, where pixels repeat)
        assert (resampled[0] - source_rows).abs()[1:-1, 1:-1].max() <= 0.5 + 1e-4
        assert (resampled[1] - source_cols).abs()[1:-1, 1:-1].max() <= 0.5 + 1e-4


@needs_dali
def test_dali_cuts_the_mask_where_torch_does():
    rrc = RandomResizedCrop((24, 30))
    labels = (np.arange(70 * 90) % 251).astype(np.uint8).reshape(70, 90, 1)
    for params in RRC_PARAMETERS.values():
        expected = rrc.label(torch.from_numpy(labels[:, :, 0]), **params).numpy()
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=0)
        def pipeline(values=params):
            x = fn.external_source(
                source=lambda: [labels], batch=True, dtype=types.UINT8, layout="HWC"
            )
            return rrc.dali_label(x, **values)

        pipe = pipeline()
        pipe.build()
        (out,) = pipe.run()
        np.testing.assert_array_equal(np.array(out.as_tensor())[0, :, :, 0], expected)


@needs_dali
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_both_backends_move_stored_integers_alike(name):
    """The geometric steps on 8-bit values: a resize rounds, and the backends round
    their sums in different orders: at most one level apart, else equal."""
    config = CONFIGS[name].model_copy(update={"normalize": "none", "contrast": 0, "brightness": 0})
    photo = (PHOTO * 255).round().astype(np.uint8)
    chain = chain_2d(config, photo.shape[:2], 3, None)
    params = ([{}] if config.resize else []) + PARAMETERS["halves"][:3]
    expected = run_torch(photo, chain, params)
    got = run_dali(photo, chain, params)
    assert got.dtype == expected.dtype == np.uint8
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert difference.max() <= (1 if config.resize else 0)


def test_folded_intensity_steps_equal_the_steps_one_by_one():
    config = Augment2D(contrast=0.3, brightness=0.2, normalize="card")
    chain = chain_2d(config, (70, 90), 3, STATS)
    params = [{"c": 1.25, "b": -0.1}, {}]
    stored = torch.from_numpy((PHOTO * 65535).round().astype(np.int64)).permute(2, 0, 1)
    one_by_one = stored.double() / 65535
    for transform, values in zip(chain, params):
        one_by_one = transform.torch(one_by_one, **values)
    gain, offset = fold_intensity(chain, params, 3, 65535.0)
    folded = (
        stored.double() * torch.tensor(gain)[:, None, None] + torch.tensor(offset)[:, None, None]
    )
    torch.testing.assert_close(folded, one_by_one, atol=1e-6, rtol=0)  # float32 statistics
