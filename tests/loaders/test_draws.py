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
