"""One step of the 2D augmentation chain (chain2d.py): its parameters, how training draws
them, their evaluation values, and its operation in torch and in DALI."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from medshard.loaders.draws import Draw

__all__ = ["Array", "Transform2D"]

# The geometric steps also take numpy arrays (the torch backend's image loader moves
# views, copied once into the batch); the intensity steps take tensors.
Array = torch.Tensor | np.ndarray


class Transform2D:
    """One step of the chain: `draws` (how training draws each parameter), `fixed` (every
    parameter's value in evaluation), and the operation as `torch` and as `dali`;
    geometric steps also as `label` (a mask, nearest), intensity steps as `affine`."""

    geometric: ClassVar[bool] = True

    def draws(self) -> dict[str, Draw]:
        return {}

    def fixed(self) -> dict[str, Any]:
        return {}

    def params(self, generator: torch.Generator | None) -> dict[str, Any]:
        """Drawn from `generator` in its declared order; None: the evaluation values."""
        from medshard.loaders.chain2d import chain_params

        return chain_params([self], generator)[0]

    def dali_params(self, training: bool) -> dict[str, Any]:
        drawn = {n: d.dali() for n, d in self.draws().items()} if training else {}
        return self.fixed() | drawn

    def torch(self, image: torch.Tensor, **params) -> torch.Tensor:
        raise NotImplementedError

    def label(self, mask: torch.Tensor, **params) -> torch.Tensor:
        """The same geometric step on a label map (..., H, W)."""
        return self.torch(mask, **params)

    def dali(self, image, **params):
        raise NotImplementedError

    def dali_label(self, mask, **params):
        return self.dali(mask, **params)

    def affine(self, channels: int, **params) -> tuple[np.ndarray | float, np.ndarray | float]:
        """An intensity step as (gain, offset), each one number or one per channel:
        x -> gain * x + offset."""
        raise NotImplementedError
