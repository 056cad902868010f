"""How an augmentation draws a parameter: a distribution, sampled either from uniform
numbers in [0, 1) (the torch backend: a seeded torch generator's, or `sample_units`,
every sample of a batch at once) or by the DALI random operator of the same distribution
(seeded per pipeline). Each value is made from one uniform number (`values`, on a
column of them), so that `draw_columns` takes every value a batch needs in one pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Choice", "Coin", "Draw", "Uniform", "draw_all", "draw_columns", "sample_units"]

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2^64 / the golden ratio


def _finalise(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64s (wrapping): every bit of z moves every bit
    of the result."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_units(seed: int, epoch: int, indices, count: int) -> np.ndarray:
    """`count` numbers uniform in [0, 1) (53 bits each) for each of samples `indices`
    (rows), in one vectorised pass: the SplitMix64 sequence from a state that only
    (seed, epoch, index) give. A pure function of integers, so the same in any thread,
    order or batch, where a seeded torch generator costs microseconds per sample to make
    and to call (SplitMix64: Steele, Lea and Flood, OOPSLA 2014; written out because it
    is a few lines)."""
    state = np.zeros(len(indices), np.uint64)
    for value in (np.uint64(seed & _MASK), np.uint64(epoch & _MASK), _as_uint64(indices)):
        state = _finalise((state ^ value) + np.uint64(_GAMMA))
    steps = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(_GAMMA)
    return (_finalise(state[:, None] + steps) >> np.uint64(11)) * 2.0**-53


def _as_uint64(values) -> np.ndarray:
    return np.asarray(values, np.int64).astype(np.uint64)


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high)."""

    low: float
    high: float

    def values(self, u: np.ndarray) -> np.ndarray:
        return self.low + (self.high - self.low) * u

    def torch(self, generator: torch.Generator) -> float:
        return draw_all([self], generator)[0]

    def dali(self):
        from nvidia.dali import fn

        return fn.random.uniform(range=(self.low, self.high))


@dataclass(frozen=True)
class Coin:
    """0 or 1, each with probability 1/2."""

    def values(self, u: np.ndarray) -> np.ndarray:
        return (u < 0.5).astype(np.int64)

    def torch(self, generator: torch.Generator) -> int:
        return draw_all([self], generator)[0]

    def dali(self):
        from nvidia.dali import fn

        return fn.random.coin_flip(probability=0.5)


@dataclass(frozen=True)
class Choice:
    """One of `options`, each equally likely."""

    options: tuple[int, ...]

    def values(self, u: np.ndarray) -> np.ndarray:
        picks = np.minimum((u * len(self.options)).astype(np.int64), len(self.options) - 1)
        return np.asarray(self.options, np.int64)[picks]

    def torch(self, generator: torch.Generator) -> int:
        return draw_all([self], generator)[0]

    def dali(self):
        from nvidia.dali import fn

        return fn.random.choice(np.asarray(self.options, np.int32))


Draw = Uniform | Coin | Choice


def draw_columns(draws: list[Draw], units: np.ndarray) -> list[np.ndarray]:
    """Each of `draws`' values for every row of `units` (a row per sample, a column per
    draw in order), as one column each."""
    return [draw.values(units[:, i]) for i, draw in enumerate(draws)]


def draw_all(draws: list[Draw], source: torch.Generator | np.ndarray) -> list:
    """One value of each of `draws`, in order, from one call to `source` (or from one
    sample's row of `sample_units`)."""
    if not draws:
        return []
    if isinstance(source, torch.Generator):
        source = torch.rand(len(draws), generator=source, dtype=torch.float64).numpy()
    return [column[0].item() for column in draw_columns(draws, source[None, : len(draws)])]
