"""The k-NN probe of a self-supervised backbone (Wu et al., 2018, as DINO reports it):
the L2-normalised features of the labelled training images form a bank; each validation
image takes the labels of its k most similar bank images, weighted by exp(similarity /
temperature). Its accuracy says, each epoch, whether the features separate the classes,
which the pretraining loss alone does not."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics as tm

__all__ = ["embed", "gather_rows", "knn_metrics", "knn_scores", "label_targets"]


def label_targets(batch: dict, kind: str, classes: int) -> torch.Tensor:
    """A batch's labels as (N, classes) floats: one-hot classes, or the label vector."""
    if kind == "classification":
        return F.one_hot(batch["label"].long(), classes).float()
    return batch["labels"].float()


@torch.no_grad()
def embed(model, loader, kind: str, classes: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised features of `width`, label targets) of this rank's share of `loader`."""
    features, targets = [], []
    for batch in loader:
        features.append(F.normalize(model(batch["image"]).float().flatten(1), dim=1))
        targets.append(label_targets(batch, kind, classes))
    if not features:  # a rank without a share of the split
        return torch.zeros(0, width), torch.zeros(0, classes)
    return torch.cat(features), torch.cat(targets)


def gather_rows(accelerator, rows: torch.Tensor, width: int) -> torch.Tensor:
    """Every rank's `rows` (a different number on each rank), in rank order."""
    rows = rows.reshape(-1, width).to(accelerator.device)
    count = torch.tensor([rows.shape[0]], device=accelerator.device)
    counts = accelerator.gather(count).tolist()
    padded = accelerator.pad_across_processes(rows, dim=0)
    gathered = accelerator.gather(padded).reshape(len(counts), -1, width)
    return torch.cat([gathered[rank, :n] for rank, n in enumerate(counts)])


def knn_scores(
    queries: torch.Tensor, bank: torch.Tensor, targets: torch.Tensor, k: int, temperature: float
) -> torch.Tensor:
    """(Q, classes) votes of each query's `k` nearest bank rows (cosine similarity of
    normalised features), each weighted by exp(similarity / temperature), as shares of
    the query's total weight."""
    similarity = queries @ bank.T
    top, where = similarity.topk(min(k, bank.shape[0]), dim=1)
    weights = (top / temperature).exp()
    votes = (weights[:, :, None] * targets[where]).sum(1)
    return votes / weights.sum(1, keepdim=True)


def knn_metrics(kind: str | None, classes: int) -> tm.MetricCollection:
    """What the probe reports on a dataset labelled for `kind` (none without labels)."""
    if kind == "classification":
        return tm.MetricCollection(
            {"knn_accuracy": tm.classification.MulticlassAccuracy(classes, average="micro")}
        )
    if kind == "multilabel":
        return tm.MetricCollection(
            {
                "knn_accuracy": tm.classification.MultilabelAccuracy(classes, average="micro"),
                "knn_auroc_macro": tm.classification.MultilabelAUROC(classes, average="macro"),
            }
        )
    return tm.MetricCollection({})
