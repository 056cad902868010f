"""How an augmentation draws a parameter: a distribution, sampled either from a seeded
torch generator (the torch backend: one generator per sample) or by the DALI random
operator of the same distribution (seeded per pipeline)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Choice", "Coin", "Draw", "Uniform"]


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high)."""

    low: float
    high: float

    def torch(self, generator: torch.Generator) -> float:
        return self.low + (self.high - self.low) * float(torch.rand((), generator=generator))

    def dali(self):
        from nvidia.dali import fn

        return fn.random.uniform(range=(self.low, self.high))


@dataclass(frozen=True)
class Coin:
    """0 or 1, each with probability 1/2."""

    def torch(self, generator: torch.Generator) -> int:
        return int(torch.rand((), generator=generator) < 0.5)

    def dali(self):
        from nvidia.dali import fn

        return fn.random.coin_flip(probability=0.5)


@dataclass(frozen=True)
class Choice:
    """One of `values`, each equally likely."""

    values: tuple[int, ...]

    def torch(self, generator: torch.Generator) -> int:
        return self.values[int(torch.randint(len(self.values), (), generator=generator))]

    def dali(self):
        from nvidia.dali import fn

        return fn.random.choice(np.asarray(self.values, np.int32))


Draw = Uniform | Coin | Choice
