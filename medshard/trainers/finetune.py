"""Reuse pretrained weights: load a checkpoint's matching tensors with strict=False and
say what was loaded, skipped and missing; freeze the backbone, then unfreeze it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medshard.trainers.checkpoint import is_pickle
from medshard.trainers.config import ConfigError

__all__ = [
    "LoadReport",
    "load_weights",
    "read_state_dict",
    "split_parameters",
    "set_backbone_trainable",
]


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    skipped_shape: list[str] = field(default_factory=list)  # in both, shapes differ
    missing: list[str] = field(default_factory=list)  # in the model only
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint only
    origin: str = ""  # which part of the checkpoint was read, when not all of it

    def summary(self) -> str:
        shapes = ", ".join(self.skipped_shape[:4]) + (" ..." if len(self.skipped_shape) > 4 else "")
        origin = f"{self.origin}: " if self.origin else ""
        return (
            f"{origin}loaded {len(self.loaded)} tensors, skipped {len(self.skipped_shape)} "
            f"for shape ({shapes}), {len(self.missing)} missing, {len(self.unexpected)} unexpected"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or from the model file of a medshard checkpoint
    folder; a pickle is refused, since unpickling can run any code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        # without safetensors weights, name the pickle that stands in their place
        found = sorted(path.glob("model*.safetensors")) or [
            p for p in sorted(path.iterdir()) if p.is_file() and is_pickle(p)
        ]
        if not found:
            raise ConfigError(f"{path}: no model weights in this checkpoint folder")
        path = found[0]
    if not path.is_file():
        raise ConfigError(f"{path}: the checkpoint does not exist")
    if is_pickle(path):
        raise ConfigError(
            f"{path}: is a pickle; medshard loads weights only from safetensors, which cannot "
            "run code (convert it once, if you trust it, with safetensors.torch.save_file("
            "torch.load(PATH, weights_only=True), 'weights.safetensors'))"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ConfigError(
            f"{path}: not a safetensors file ({exc}); medshard loads weights only from safetensors"
        ) from exc


def load_weights(model: nn.Module, path: Path) -> LoadReport:
    """Copy every checkpoint tensor whose name and shape match; refuse a checkpoint that
    matches nothing. A BYOL run's checkpoint gives its online backbone."""
    from medshard.trainers.byol import online_backbone

    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    own = model.state_dict()
    report = LoadReport()
    backbone = online_backbone(state)
    if backbone is not None and not any(name.startswith("target_backbone.") for name in own):
        state, report.origin = backbone, "the online backbone of a BYOL checkpoint"
    usable = {}
    for name, tensor in state.items():
        if name not in own:
            report.unexpected.append(name)
        elif own[name].shape != tensor.shape:
            report.skipped_shape.append(name)
        else:
            usable[name] = tensor
            report.loaded.append(name)
    report.missing = [n for n in own if n not in state]
    if not usable:
        raise ConfigError(
            f"{path}: the checkpoint matches no tensor of the model "
            f"({len(state)} tensors, none with a model name and shape)"
        )
    model.load_state_dict(usable, strict=False)
    return report


def split_parameters(model: nn.Module, head: tuple[str, ...]) -> tuple[list, list]:
    """(backbone parameters, head parameters) by name prefix."""
    backbone, top = [], []
    for name, parameter in model.named_parameters():
        (top if head and name.startswith(head) else backbone).append(parameter)
    return backbone, top


def set_backbone_trainable(
    model: nn.Module, head: tuple[str, ...], epoch: int, frozen_epochs: int, mode: str
) -> None:
    """Frozen for `frozen_epochs`; then all at once, or progressively from the top: one more
    of the backbone's top-level blocks per epoch."""
    blocks = [name for name, _ in model.named_children() if not name.startswith(head or ("\0",))]
    if epoch < frozen_epochs:
        open_blocks: set[str] = set()
    elif mode == "all":
        open_blocks = set(blocks)
    else:
        open_blocks = set(blocks[len(blocks) - (epoch - frozen_epochs + 1) :])
    for name, parameter in model.named_parameters():
        if head and name.startswith(head):
            parameter.requires_grad_(True)
        else:
            parameter.requires_grad_(name.split(".", 1)[0] in open_blocks)
