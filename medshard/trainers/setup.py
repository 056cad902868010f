"""What a run is built from, read off its config: the augmentation, the two loaders, the
network (with fine-tuning weights) and the optimizer with its schedule."""

from __future__ import annotations

from collections.abc import Callable

import torch

from medshard.loaders import Augment2D, Augment3D, batch_channels, build_loader
from medshard.shards.reader import Dataset
from medshard.trainers.config import ConfigError, TrainConfig
from medshard.trainers.finetune import load_weights, split_parameters
from medshard.trainers.models import build_model, head_prefixes
from medshard.trainers.tasks import Task

__all__ = ["build_augment", "build_loaders", "build_network", "build_optimizer", "step_scheduler"]


def build_augment(config: TrainConfig, ds: Dataset) -> Augment2D | Augment3D:
    """The `augment:` section as the dataset's kind of augmentation."""
    kind = Augment3D if ds.card.kind == "volumes" else Augment2D
    try:
        return kind(**config.augment)
    except ValueError as exc:
        raise ConfigError(f"augment: {exc}") from exc


def build_loaders(config: TrainConfig, ds: Dataset, accelerator):
    """(train, validation) loaders for this rank, from the `loader:` section."""
    if config.task == "byol":  # two views of each image, and the k-NN probe's loaders
        from medshard.trainers.pretrain import build_byol_loaders

        return build_byol_loaders(config, ds, accelerator, build_augment(config, ds))
    place = dict(
        augment=build_augment(config, ds),
        seed=config.seed,
        fold=config.fold,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
    )
    folds = config.fold is not None
    train_split = "train" if folds else config.loader.train_split
    val_split = "val" if folds else config.loader.val_split
    return (
        build_loader(ds, train_split, config.loader, training=True, **place),
        # every validation sample counts once: ranks read shares that differ by at most one
        build_loader(
            ds, val_split, config.loader, training=False, uneven="uneven", drop_last=False, **place
        ),
    )


def build_network(
    config: TrainConfig, ds: Dataset, task: Task, log: Callable[[str], None]
) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """The configured network for the loader's batches, with the fine-tuning weights
    loaded; and the name prefixes of its head."""
    in_channels = batch_channels(ds, build_augment(config, ds))
    spatial_dims = 3 if ds.card.kind == "volumes" else 2
    if task.name == "byol":
        from medshard.trainers.pretrain import build_byol_network

        model = build_byol_network(config, ds, build_augment(config, ds))
    else:
        model = build_model(config, spatial_dims, in_channels, task.out_channels)
    if config.finetune.checkpoint:
        report = load_weights(model, config.finetune.checkpoint)
        log(f"fine-tuning from {config.finetune.checkpoint}: {report.summary()}")
    byol_head = ("projector", "predictor") if task.name == "byol" else None
    return model, config.finetune.head or byol_head or head_prefixes(model)


def build_optimizer(config: TrainConfig, model: torch.nn.Module, head: tuple[str, ...], task: Task):
    """AdamW over the backbone and head groups (each its own learning rate) and the
    configured schedule; the plateau schedule watches the task's monitor in its mode."""
    backbone, top = split_parameters(model, head)
    lr = config.optim.lr
    groups = [
        {"params": backbone, "lr": config.finetune.backbone_lr or lr},
        {"params": top, "lr": config.finetune.head_lr or lr},
    ]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=lr, weight_decay=config.optim.weight_decay
    )
    if task.name == "byol":  # the target follows each optimizer step
        model.follow(optimizer)
    if config.optim.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(config.epochs, 1)
        )
    elif config.optim.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=task.mode, patience=2
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


def step_scheduler(scheduler, config: TrainConfig, record: dict, task: Task) -> None:
    """One scheduler step after an epoch, given the epoch's record to the plateau schedule."""
    if config.optim.schedule != "plateau":
        scheduler.step()
    elif task.monitor in record:
        scheduler.step(record[task.monitor])
    else:  # the validation loss stands in, turned to the monitor's direction
        scheduler.step(record["val_loss"] if task.mode == "min" else -record["val_loss"])
