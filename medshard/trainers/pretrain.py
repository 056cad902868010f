"""What a BYOL run (`task: byol`) is built from and how it validates: two views of each
training image; the validation loss on two views of each validation image that stay
the same from epoch to epoch; and, when the dataset has class or multi-label labels,
the k-NN probe of the backbone's features (bank: the training split, queries: the
validation split, both with the evaluation transform)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medshard.loaders import Augment2D, batch_channels, build_loader
from medshard.loaders.partition import num_batches, rank_count
from medshard.loaders.sources import Selection, ShardSamples
from medshard.loaders.topology import current_topology
from medshard.loaders.views import build_view_loader
from medshard.shards.reader import Dataset
from medshard.trainers.byol import Byol, build_byol
from medshard.trainers.config import ConfigError, TrainConfig
from medshard.trainers.knn import embed, gather_rows, knn_scores, label_targets
from medshard.trainers.tasks import Task

__all__ = ["ByolValidation", "build_byol_loaders", "build_byol_network", "optimizer_steps"]

LABELLED = ("classification", "multilabel")  # the labels the k-NN probe votes with


@dataclass
class ByolValidation:
    """The validation loaders of a BYOL run: `views` for the loss, and for the k-NN probe
    (None without labels) the `bank` and `queries`."""

    views: object
    bank: object | None
    queries: object | None


def _splits(config: TrainConfig) -> tuple[str, str]:
    if config.fold is not None:
        return "train", "val"
    return config.loader.train_split, config.loader.val_split


def build_byol_loaders(config: TrainConfig, ds: Dataset, accelerator, augment: Augment2D):
    """(training views, ByolValidation) for this rank."""
    train_split, val_split = _splits(config)
    place = dict(
        seed=config.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
    )
    views = dict(
        augment=augment,
        pipeline=config.byol.views,
        channels=batch_channels(ds, augment),
        fold=config.fold,
        **place,
    )
    train = build_view_loader(ds, train_split, config.loader, training=True, **views)
    val_views = build_view_loader(
        ds, val_split, config.loader, training=False, uneven="uneven", **views
    )
    bank = queries = None
    if ds.card.task in LABELLED:
        plain = dict(
            augment=augment,
            fold=config.fold,
            training=False,
            uneven="uneven",
            drop_last=False,
            **place,
        )
        bank = build_loader(ds, train_split, config.loader, **plain)
        queries = build_loader(ds, val_split, config.loader, **plain)
    return train, ByolValidation(val_views, bank, queries)


def optimizer_steps(config: TrainConfig, ds: Dataset, world_size: int) -> int:
    """The optimizer steps of the whole run on `world_size` ranks, as the training loader
    cuts its epochs (each epoch ends its accumulation)."""
    split, _ = _splits(config)
    samples = len(ShardSamples(ds, Selection(split, config.fold)))
    count = rank_count(samples, 0, world_size, "pad")
    batches = num_batches(count, config.loader.batch_size, config.loader.drop_last)
    if not batches:
        raise ConfigError(
            f"{ds.location}: split {split!r} gives each of {world_size} rank(s) {count} samples, "
            f"fewer than loader.batch_size {config.loader.batch_size} with loader.drop_last: "
            "true, so not one training step; lower loader.batch_size or set "
            "loader.drop_last=false"
        )
    return config.epochs * math.ceil(batches / config.optim.accumulate)


def build_byol_network(config: TrainConfig, ds: Dataset, augment: Augment2D) -> Byol:
    """The BYOL model for the dataset's batches, its momentum schedule over the run."""
    steps = optimizer_steps(config, ds, current_topology().world_size)
    return build_byol(config, batch_channels(ds, augment), steps)


def _plain(value):
    return value.item() if value.numel() == 1 else value.tolist()


def validate_byol(
    model, loaders: ByolValidation, task: Task, loss_fn, metrics, accelerator
) -> tuple[dict, list[str]]:
    """The loss on the validation views and the k-NN probe's metrics, over every rank's
    share, each sample once; and the keys this rank validated on."""
    model.eval()
    losses = torch.zeros(2, device=accelerator.device)
    keys: list[str] = []
    with torch.no_grad():
        for batch in loaders.views:
            keys.extend(batch["key"])
            loss = loss_fn(model(batch["image"])).item()
            count = len(batch["key"])
            losses += torch.tensor([loss * count, count], device=accelerator.device)
        total = accelerator.reduce(losses, reduction="sum")
        values = {}
        if loaders.bank is not None:
            values = _probe(model, loaders, task, metrics, accelerator)
    return {"val_loss": (total[0] / total[1].clamp_min(1)).item(), **values}, keys


def _probe(model, loaders: ByolValidation, task: Task, metrics, accelerator) -> dict:
    kind, classes, b = task.probe, len(task.classes), task.config.byol
    width = accelerator.unwrap_model(model).projector[0].in_features
    features, targets = embed(model, loaders.bank, kind, classes, width)
    bank = gather_rows(accelerator, features, width)
    bank_targets = gather_rows(accelerator, targets, classes)
    for batch in loaders.queries:
        queries = torch.nn.functional.normalize(model(batch["image"]).float().flatten(1), dim=1)
        scores = knn_scores(queries, bank, bank_targets, b.knn_k, b.knn_temperature)
        truth = label_targets(batch, kind, classes)
        metrics.update(scores, truth.argmax(1) if kind == "classification" else truth.long())
    values = {f"val_{name}": _plain(v) for name, v in metrics.compute().items()}
    metrics.reset()
    return values
