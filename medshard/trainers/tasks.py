"""Tasks: what the model's output is compared with, the loss, and the torchmetrics that
report it (synchronised across ranks by torchmetrics itself)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics as tm
from torch import nn

from medshard.shards.foreground import read_foreground
from medshard.shards.reader import Dataset
from medshard.trainers.config import ConfigError, TrainConfig

__all__ = ["Task", "build_task"]

_DEFAULT_MONITOR = {
    "classification": ("val_accuracy", "max"),
    "multilabel": ("val_auroc_macro", "max"),
    "segmentation": ("val_dice", "max"),
    "regression": ("val_mae", "min"),
    "reconstruction": ("val_l1", "min"),
    "byol": ("val_knn_accuracy", "max"),  # without labels: the validation loss
}


class Task:
    """Loss, metrics and output size for one task on one dataset."""

    def __init__(self, config: TrainConfig, ds: Dataset):
        self.name = config.task
        self.config = config
        card = ds.card
        self.classes = list(card.label_names)
        self.monitor, self.mode = _DEFAULT_MONITOR[self.name]
        # byol: the labels the k-NN probe votes with, if any
        self.probe = card.task if card.task in ("classification", "multilabel") else None
        if self.name == "byol" and self.probe is None:
            self.monitor, self.mode = "val_loss", "min"
        self.monitor = config.monitor or self.monitor
        self.mode = config.monitor_mode or self.mode
        self.mask_classes = 0
        if self.name == "segmentation":
            labels = {label for per_key in read_foreground(ds.path).values() for label in per_key}
            self.mask_classes = max(labels, default=1) + 1

    @property
    def out_channels(self) -> int:
        return {
            "classification": len(self.classes),
            "multilabel": len(self.classes),
            "segmentation": self.mask_classes,
            "regression": 1,
            "reconstruction": 0,
            "byol": 0,
        }[self.name]

    def loss_fn(self, ds: Dataset) -> nn.Module:
        c = self.config.loss
        if self.name == "classification":
            return nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
        if self.name == "multilabel":
            weight = None
            if c.pos_weight == "auto":  # negatives / positives per label, over the train split
                rows = [
                    r["labels"]
                    for r in ds.manifest.to_pylist()
                    if r["split"] == self.config.loader.train_split and r["labels"] is not None
                ]
                counts = torch.tensor(rows, dtype=torch.float32)
                weight = (len(rows) - counts.sum(0)) / counts.sum(0).clamp_min(1)
            elif c.pos_weight is not None:
                weight = torch.tensor(c.pos_weight, dtype=torch.float32)
            return nn.BCEWithLogitsLoss(pos_weight=weight)
        if self.name == "segmentation":
            from monai.losses import DiceCELoss

            return DiceCELoss(to_onehot_y=True, softmax=True)
        if self.name == "regression":
            return nn.MSELoss() if c.regression == "mse" else nn.L1Loss()
        if self.name == "byol":
            from medshard.trainers.byol import ByolLoss

            return ByolLoss()
        return _ReconstructionLoss(c.l1_weight, c.ssim_weight, c.smooth_weight, c.classifier_weight)

    def target(self, batch: dict) -> torch.Tensor:
        if self.name == "classification":
            return batch["label"].long()
        if self.name == "multilabel":
            smoothing = self.config.loss.label_smoothing  # towards 0.5 for each label
            return batch["labels"].float() * (1 - smoothing) + smoothing / 2
        if self.name == "segmentation":
            return batch["mask"].long().unsqueeze(1)
        if self.name == "regression":
            return batch["target"].float().view(-1, 1)
        return batch["image"]

    def metrics(self) -> tm.MetricCollection:
        n = len(self.classes)
        if self.name == "byol":
            from medshard.trainers.knn import knn_metrics

            return knn_metrics(self.probe, n)
        if self.name == "classification":
            metrics = {
                "accuracy": tm.classification.MulticlassAccuracy(n, average="micro"),
                "f1_macro": tm.classification.MulticlassF1Score(n, average="macro"),
                "precision": tm.classification.MulticlassPrecision(n, average=None),
                "recall": tm.classification.MulticlassRecall(n, average=None),
                "f1": tm.classification.MulticlassF1Score(n, average=None),
                "confusion": tm.classification.MulticlassConfusionMatrix(n),
            }
            if n > 2:
                metrics["top2_accuracy"] = tm.classification.MulticlassAccuracy(
                    n, top_k=2, average="micro"
                )
            return tm.MetricCollection(metrics)
        if self.name == "multilabel":
            return tm.MetricCollection(
                {
                    "auroc": tm.classification.MultilabelAUROC(n, average=None),
                    "auroc_macro": tm.classification.MultilabelAUROC(n, average="macro"),
                    "ap": tm.classification.MultilabelAveragePrecision(n, average=None),
                    "exact_match": tm.classification.MultilabelExactMatch(n),
                }
            )
        if self.name == "segmentation":
            from torchmetrics.segmentation import DiceScore

            k = self.mask_classes
            return tm.MetricCollection(
                {
                    "dice": DiceScore(k, include_background=False, input_format="index"),
                    "hausdorff95": Hausdorff95(k),
                }
            )
        if self.name == "regression":
            return tm.MetricCollection(
                {"mae": tm.MeanAbsoluteError(), "r2": tm.R2Score(), "pearson": tm.PearsonCorrCoef()}
            )
        return tm.MetricCollection(
            {
                "l1": tm.MeanAbsoluteError(),
                "ssim": tm.image.StructuralSimilarityIndexMeasure(data_range=None),
            }
        )

    def update(self, metrics: tm.MetricCollection, output, batch: dict) -> None:
        target = self.target(batch)
        if self.name == "classification":
            metrics.update(output.softmax(-1), target)
        elif self.name == "multilabel":
            metrics.update(output.sigmoid(), batch["labels"].long())
        elif self.name == "segmentation":
            metrics.update(output.argmax(1), target[:, 0])
        elif self.name == "regression":
            metrics.update(output.view(-1), target.view(-1))
        else:
            recon = output["reconstruction"]
            metrics["l1"].update(recon, target)
            metrics["ssim"].update(recon.flatten(0, 1), target.flatten(0, 1))


class Hausdorff95(tm.Metric):
    """95th-percentile Hausdorff distance (voxels) over foreground classes, 2D or 3D, from
    MONAI's implementation; a torchmetrics Metric so that it synchronises across ranks.
    (torchmetrics' own HausdorffDistance takes 2D inputs only.) Cases where a class is
    absent from prediction or truth are left out."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        from monai.metrics import compute_hausdorff_distance

        def one_hot(x):
            return F.one_hot(x.long(), self.num_classes).movedim(-1, 1)

        distances = compute_hausdorff_distance(
            one_hot(preds), one_hot(target), include_background=False, percentile=95
        )
        valid = torch.isfinite(distances)
        self.total += distances[valid].double().sum().to(self.total.device)
        self.count += valid.sum().to(self.count.device)

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1)


class _ReconstructionLoss(nn.Module):
    """L1 + (1 - MS-SSIM) per frame + temporal smoothness (the change between consecutive
    reconstructed frames should match the input's) + an optional classifier term."""

    def __init__(self, l1: float, ssim: float, smooth: float, classifier: float):
        super().__init__()
        self.l1, self.ssim, self.smooth, self.classifier = l1, ssim, smooth, classifier

    def forward(self, output: dict, target: torch.Tensor, label: torch.Tensor | None = None):
        from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

        recon = output["reconstruction"]
        loss = self.l1 * F.l1_loss(recon, target)
        if self.ssim:
            frames, truth = recon.flatten(0, 1), target.flatten(0, 1)
            low = torch.minimum(frames.amin(), truth.amin())
            span = (torch.maximum(frames.amax(), truth.amax()) - low).clamp_min(1e-6)
            ms_ssim = multiscale_structural_similarity_index_measure(
                (frames - low) / span,
                (truth - low) / span,
                data_range=1.0,
                kernel_size=5,
                betas=(0.2, 0.3, 0.5),
                normalize="relu",
            )
            loss = loss + self.ssim * (1 - ms_ssim)
        if self.smooth and recon.shape[1] > 1:
            loss = loss + self.smooth * F.l1_loss(recon.diff(dim=1), target.diff(dim=1))
        if self.classifier and label is not None and "logits" in output:
            loss = loss + self.classifier * F.cross_entropy(output["logits"], label.long())
        return loss


def build_task(config: TrainConfig, ds: Dataset) -> Task:
    """The task, refused with a clear sentence when it does not fit the dataset."""
    card = ds.card
    need = {
        "classification": "classification",
        "multilabel": "multilabel",
        "regression": "regression",
    }
    if config.task in need and card.task != need[config.task]:
        raise ConfigError(
            f"task {config.task!r} does not fit {ds.path}: its labels are for "
            f"{card.task or 'no task'} (label columns chosen at ingest)"
        )
    if (
        config.task == "segmentation"
        and "mask" not in card.fields
        and "mask.npy" not in card.fields
    ):
        raise ConfigError(f"task 'segmentation' needs masks, and {ds.path} has none")
    if config.task == "byol" and card.kind != "images":
        raise ConfigError(f"task 'byol' pretrains on 2D images, and {ds.path} holds {card.kind}")
    if config.task == "reconstruction" and card.kind == "images":
        raise ConfigError("task 'reconstruction' trains on clips or volumes, not 2D images")
    for split in (config.loader.train_split, config.loader.val_split):
        if config.fold is None:
            ds.require_split(split)
    if config.fold is not None and not card.folds:
        raise ConfigError(f"{ds.path} has no cross-validation folds (ingest with --folds K)")
    return Task(config, ds)
