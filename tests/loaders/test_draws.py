"""Each distribution gives the same support from a torch generator and from DALI."""

import numpy as np
import pytest
import torch

from medshard.loaders import dali_available
from medshard.loaders.draws import Choice, Coin, Uniform, sample_units

DRAWS = {"uniform": Uniform(0.7, 1.3), "coin": Coin(), "choice": Choice((0, 1, 2, 3))}


def support(name: str, values) -> bool:
    values = np.asarray(values, np.float64)
    if name == "uniform":
        return bool(((values >= 0.7) & (values < 1.3)).all() and np.ptp(values) > 0.3)
    expected = {0, 1} if name == "coin" else {0, 1, 2, 3}
    return set(values.astype(int).tolist()) == expected


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_torch_draws_repeat_with_the_seed_and_cover_the_support(name):
    def draws(seed: int) -> list:
        generator = torch.Generator().manual_seed(seed)
        return [DRAWS[name].torch(generator) for _ in range(200)]

    assert draws(3) == draws(3) and draws(3) != draws(4)
    assert support(name, draws(3))


@pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only")
@pytest.mark.parametrize("name", sorted(DRAWS))
def test_dali_draws_cover_the_same_support(name):
    from nvidia.dali import pipeline_def

    @pipeline_def(batch_size=200, num_threads=1, device_id=None, seed=3)
    def pipeline():
        return DRAWS[name].dali()

    pipe = pipeline()
    pipe.build()
    (out,) = pipe.run()
    assert support(name, np.array(out.as_tensor()).ravel())


def test_sample_units_are_a_pure_function_of_the_integers_and_uniform():
    np.testing.assert_array_equal(sample_units(3, 1, [7], 4), sample_units(3, 1, [7], 4))
    # a sample's numbers are the same whichever batch draws them, and wherever in it
    batch = sample_units(3, 1, [5, 7, 9], 4)
    np.testing.assert_array_equal(batch[1], sample_units(3, 1, [7], 4)[0])
    neighbours = sample_units(3, 1, np.arange(2000), 1)[:, 0]
    assert len(set(neighbours.tolist())) == 2000  # neighbouring samples draw unrelated numbers
    units = sample_units(0, 2, np.arange(5000), 3).ravel()
    assert units.min() >= 0 and units.max() < 1
    assert abs(units.mean() - 0.5) < 0.01 and abs(units.var() - 1 / 12) < 0.005
    assert abs(np.corrcoef(units[:-1], units[1:])[0, 1]) < 0.02
    assert (sample_units(0, 2, [1], 2) != sample_units(0, 1, [2], 2)).all()  # order counts


def test_sample_units_are_splitmix64_of_the_samples_integers():
    # SplitMix64 (Steele, Lea and Flood 2014) from the state of (seed, epoch, index),
    # pinned so that a sample draws the same numbers from one release to the next
    expected = [0.6386686159932043, 0.15508880807471637, 0.15988365092109103]
    assert sample_units(3, 1, [7], 3)[0].tolist() == expected


def test_each_distribution_maps_its_uniform_numbers_as_written():
    from medshard.loaders.draws import draw_columns

    units = sample_units(0, 0, np.arange(300), 3)
    uniform, coin, choice = draw_columns([Uniform(0.7, 1.3), Coin(), Choice((0, 1, 2, 3))], units)
    assert uniform.tolist() == [0.7 + (1.3 - 0.7) * u for u in units[:, 0]]
    assert coin.tolist() == [int(u < 0.5) for u in units[:, 1]]
    assert choice.tolist() == [min(int(u * 4), 3) for u in units[:, 2]]
    assert support("uniform", uniform) and support("coin", coin) and support("choice", choice)
