"""Models by name; a `module:callable` that does not build a network is refused."""

import pytest
import torch

from medshard.trainers.config import ConfigError, TrainConfig
from medshard.trainers.models import build_model


def _config(name: str, **kwargs) -> TrainConfig:
    model = {"name": name, "kwargs": kwargs}
    return TrainConfig(name="x", dataset="d", task="classification", model=model)


def test_a_module_callable_builds_the_network():
    model = build_model(_config("tests.trainers.real_runs:tiny_cnn"), 2, 1, 3)
    assert isinstance(model, torch.nn.Module) and model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("builtins:dict", r"model\.name: 'builtins:dict' returned a dict, not a torch\.nn\.Module"),
        (
            "tests.trainers.real_runs:not_a_module",
            r"model\.name: 'tests\.trainers\.real_runs:not_a_module' returned a dict, not a",
        ),
        ("math:pi", r"model\.name: 'math:pi' is a float, not a callable"),
        (
            "builtins:len",
            r"model\.name: 'builtins:len' cannot be called with spatial_dims, in_channels, "
            r"out_channels and model\.kwargs",
        ),
        ("no_such_module:f", r"model\.name: cannot import 'no_such_module:f'"),
    ],
)
def test_a_callable_that_does_not_build_a_module_is_refused(name, message):
    with pytest.raises(ConfigError, match=message):
        build_model(_config(name), 2, 1, 3)
