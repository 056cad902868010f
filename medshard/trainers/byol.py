"""BYOL (Grill et al., 2020): an online network (backbone, projector, predictor) learns to
predict a target network's projection of another view of the same image; the target is
an exponential moving average of the online backbone and projector, its momentum rising
from its base to 1 on a cosine over the run's optimizer steps.

The backbone is the configured classification network with its last Linear layer
replaced by the identity, so that the online backbone's weights (`backbone.*` in the
run's checkpoints) load by name into the same network built for fine-tuning."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from medshard.trainers.config import ConfigError, TrainConfig
from medshard.trainers.models import build_model

__all__ = [
    "BACKBONE",
    "Byol",
    "ByolLoss",
    "byol_loss",
    "build_byol",
    "momentum_at",
    "online_backbone",
    "replace_head",
]

BACKBONE = "backbone."  # the prefix of the online backbone's tensors in a Byol state dict


def mlp(features: int, hidden: int, out: int) -> nn.Sequential:
    """Linear, batch norm, ReLU, Linear: the projector and predictor of the paper."""
    return nn.Sequential(
        nn.Linear(features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out),
    )


def _as_buffers(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of `module` whose parameters are buffers (saved with the model, never
    trained, never handed to an optimizer or unfrozen), and their names."""
    twin, names = copy.deepcopy(module), []
    for prefix, part in twin.named_modules():
        for name, parameter in list(part._parameters.items()):
            if parameter is not None:
                del part._parameters[name]
                part.register_buffer(name, parameter.detach().clone())
                names.append(f"{prefix}.{name}" if prefix else name)
    return twin, names


def momentum_at(step: int, total: int, base: float) -> float:
    """The target's momentum at optimizer step `step` of `total`: base at the start, 1
    at the end, on a cosine."""
    progress = min(step, total) / max(total, 1)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


class Byol(nn.Module):
    """Online backbone, projector and predictor, and the target backbone and projector.
    A batch of two views (N, 2, C, H, W) gives the online predictions and the target
    projections of both; a batch of images (N, C, H, W) gives the backbone's features."""

    def __init__(
        self, backbone: nn.Module, features: int, hidden: int, dim: int, momentum: float, total: int
    ):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(features, hidden, dim)
        self.predictor = mlp(dim, hidden, dim)
        self.target_backbone, weights = _as_buffers(backbone)
        self.target_projector, head = _as_buffers(self.projector)
        self.register_buffer("target_steps", torch.zeros((), dtype=torch.int64))
        self.base_momentum, self.total_steps = momentum, total
        # every rank moves the target's weights the same way, so DDP need not broadcast
        # them at each step (its batch-norm statistics, small, it keeps in sync)
        self._ddp_params_and_buffers_to_ignore = [
            *(f"target_backbone.{n}" for n in weights),
            *(f"target_projector.{n}" for n in head),
        ]

    def forward(self, images: torch.Tensor):
        if images.dim() == 4:
            return self.backbone(images)
        count = images.shape[0]
        both = torch.cat([images[:, 0], images[:, 1]])  # one pass for both views
        online = self.predictor(self.projector(self.backbone(both)))
        with torch.no_grad():
            target = self.target_projector(self.target_backbone(both))
        p1, p2 = online.split(count)
        z1, z2 = target.split(count)
        return {"p1": p1, "p2": p2, "z1": z1, "z2": z2}

    @torch.no_grad()
    def update_target(self) -> float:
        """One step of the moving average; returns the momentum it used."""
        tau = momentum_at(int(self.target_steps), self.total_steps, self.base_momentum)
        for online, target in (
            (self.backbone, self.target_backbone),
            (self.projector, self.target_projector),
        ):
            buffers = dict(target.named_buffers())
            for name, parameter in online.named_parameters():
                buffers[name].lerp_(parameter.detach(), 1 - tau)
        self.target_steps += 1
        return tau

    def follow(self, optimizer: torch.optim.Optimizer) -> None:
        """Update the target after every step of `optimizer` (a skipped step of the fp16
        scaler, or a step inside an accumulation, leaves it as it is)."""
        optimizer.register_step_post_hook(lambda *_: self.update_target())


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The normalised MSE of each row, 2 - 2 cos(prediction, target), per sample."""
    return 2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=-1)


class ByolLoss(nn.Module):
    """The symmetric loss: each view's prediction against the other view's target
    projection, summed, averaged over the batch."""

    def forward(self, output: dict, _target=None) -> torch.Tensor:
        return (
            byol_loss(output["p1"], output["z2"]) + byol_loss(output["p2"], output["z1"])
        ).mean()


def online_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The online backbone's tensors of a Byol state dict, named as in the backbone
    network itself; None when `state` is not a Byol model's."""
    if not any(name.startswith("target_backbone.") for name in state):
        return None
    return {n.removeprefix(BACKBONE): t for n, t in state.items() if n.startswith(BACKBONE)}


def replace_head(model: nn.Module) -> int:
    """Replace the network's last Linear layer by the identity; returns its input size
    (the backbone's feature size)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise ConfigError(
            "task 'byol' needs a network that ends in a Linear layer (its head, replaced by "
            "the projector); the configured model.name has none"
        )
    name, linear = last
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, nn.Identity())
    return linear.in_features


def build_byol(config: TrainConfig, in_channels: int, total_steps: int) -> Byol:
    """The configured 2D network as the backbone of a BYOL model trained for
    `total_steps` optimizer steps."""
    backbone = build_model(config, 2, in_channels, config.model.out_channels or 1)
    features = replace_head(backbone)
    b = config.byol
    return Byol(backbone, features, b.hidden_dim, b.projection_dim, b.momentum, total_steps)
