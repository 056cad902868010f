"""How an augmentation draws a parameter: a distribution, sampled either from a seeded
torch generator (the torch backend: one generator per sample) or by the DALI random
operator of the same distribution (seeded per pipeline). From a generator, each value is
made from one uniform number in [0, 1) (`value`), so that `draw_all` takes every value a
sample needs from one call to the generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Choice", "Coin", "Draw", "Uniform", "draw_all"]


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


def draw_all(draws: list[Draw], generator: torch.Generator) -> list:
    """One value of each of `draws`, in order, from one call to `generator`."""
    if not draws:
        return []
    units = torch.rand(len(draws), generator=generator, dtype=torch.float64).tolist()
    return [draw.value(u) for draw, u in zip(draws, units)]
