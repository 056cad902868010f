"""How an augmentation draws a parameter: a distribution, sampled either from a seeded
source of one sample's numbers (the torch backend: a torch generator, or a `Stream`) or
by the DALI random operator of the same distribution (seeded per pipeline). From a
source, each value is made from one uniform number in [0, 1) (`value`), so that
`draw_all` takes every value a sample needs at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Choice", "Coin", "Draw", "Stream", "Uniform", "draw_all"]

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2^64 / the golden ratio


def _finalise(z: int) -> int:
    """SplitMix64's output function: every bit of z moves every bit of the result."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


@dataclass(frozen=True)
class Stream:
    """One sample's uniform numbers: the SplitMix64 sequence from a state that only its
    integers (seed, epoch, index) give. A pure function of integers, so the same in any
    thread and order; a few integer operations per number in Python, where a seeded
    torch generator costs microseconds to make and to call (SplitMix64: Steele, Lea and
    Flood, OOPSLA 2014; written out because it is four lines)."""

    state: int

    @classmethod
    def of(cls, *values: int) -> Stream:
        state = 0
        for value in values:
            state = _finalise((state ^ int(value)) + _GAMMA & _MASK)
        return cls(state)

    def units(self, count: int) -> list[float]:
        """`count` numbers uniform in [0, 1), 53 bits each."""
        return [
            (_finalise(self.state + (i + 1) * _GAMMA & _MASK) >> 11) * 2.0**-53
            for i in range(count)
        ]


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high)."""

    low: float
    high: float

    def value(self, u: float) -> float:
        return self.low + (self.high - self.low) * u

    def torch(self, generator: torch.Generator) -> float:
        return draw_all([self], generator)[0]

    def dali(self):
        from nvidia.dali import fn

        return fn.random.uniform(range=(self.low, self.high))


@dataclass(frozen=True)
class Coin:
    """0 or 1, each with probability 1/2."""

    def value(self, u: float) -> int:
        return int(u < 0.5)

    def torch(self, generator: torch.Generator) -> int:
        return draw_all([self], generator)[0]

    def dali(self):
        from nvidia.dali import fn

        return fn.random.coin_flip(probability=0.5)


@dataclass(frozen=True)
class Choice:
    """One of `values`, each equally likely."""

    values: tuple[int, ...]

    def value(self, u: float) -> int:
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

    def torch(self, generator: torch.Generator) -> int:
        return draw_all([self], generator)[0]

    def dali(self):
        from nvidia.dali import fn

        return fn.random.choice(np.asarray(self.values, np.int32))


Draw = Uniform | Coin | Choice


def draw_all(draws: list[Draw], source: torch.Generator | Stream) -> list:
    """One value of each of `draws`, in order, from one call to `source`."""
    if not draws:
        return []
    if isinstance(source, Stream):
        units = source.units(len(draws))
    else:
        units = torch.rand(len(draws), generator=source, dtype=torch.float64).tolist()
    return [draw.value(u) for draw, u in zip(draws, units)]
