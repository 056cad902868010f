"""Each distribution gives the same support from a torch generator and from DALI."""

import numpy as np
import pytest
import torch

from medshard.loaders import dali_available
from medshard.loaders.draws import Choice, Coin, Uniform

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


def test_a_stream_is_a_pure_function_of_its_integers_and_uniform():
    from medshard.loaders.draws import Stream

    assert Stream.of(3, 1, 7).units(4) == Stream.of(3, 1, 7).units(4)
    neighbours = [Stream.of(3, 1, i).units(1)[0] for i in range(2000)]
    assert len(set(neighbours)) == 2000  # neighbouring samples draw unrelated numbers
    units = np.array([u for i in range(5000) for u in Stream.of(0, 2, i).units(3)])
    assert units.min() >= 0 and units.max() < 1
    assert abs(units.mean() - 0.5) < 0.01 and abs(units.var() - 1 / 12) < 0.005
    assert abs(np.corrcoef(units[:-1], units[1:])[0, 1]) < 0.02
    assert Stream.of(0, 2, 1).units(2) != Stream.of(0, 1, 2).units(2)  # order counts
