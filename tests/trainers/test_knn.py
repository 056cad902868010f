"""The k-NN probe: votes weighted by exp(similarity / temperature), checked by hand, and
its accuracy on a tiny labelled split."""

import math

import pytest
import torch
import torch.nn.functional as F

from medshard.trainers.knn import gather_rows, knn_metrics, knn_scores


def test_votes_are_weighted_by_the_exponential_of_the_similarity():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0]])
    scores = knn_scores(query, bank, targets, k=2, temperature=0.5)
    # the two nearest: row 0 (cos 1) votes class 0, row 2 (cos 1/sqrt 2) votes class 1
    near, far = math.exp(1 / 0.5), math.exp(math.sqrt(0.5) / 0.5)
    assert scores[0].tolist() == pytest.approx([near / (near + far), far / (near + far)])


@pytest.mark.parametrize("kind", ["classification", "multilabel"])
def test_knn_accuracy_on_a_tiny_labelled_split(kind):
    centres = torch.eye(3) * 4
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(12) % 3
    bank = F.normalize(centres[labels] + torch.randn(12, 3, generator=generator), dim=1)
    queries = F.normalize(centres[labels[:6]] + 0.1 * torch.randn(6, 3, generator=generator), dim=1)
    onehot = F.one_hot(labels, 3).float()
    metrics = knn_metrics(kind, 3)
    scores = knn_scores(queries, bank, onehot, k=3, temperature=0.1)
    truth = labels[:6] if kind == "classification" else onehot[:6].long()
    metrics.update(scores, truth)
    values = metrics.compute()
    assert float(values["knn_accuracy"]) == 1.0
    wrong = knn_metrics(kind, 3)
    wrong.update(scores.roll(1, dims=1), truth)  # every vote for the next class
    assert float(wrong.compute()["knn_accuracy"]) < 0.7
    assert list(knn_metrics(None, 3).compute()) == []


def test_gather_rows_keeps_every_row_of_a_single_process():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    rows = torch.arange(6.0).view(3, 2)
    assert torch.equal(gather_rows(accelerator, rows, 2), rows)
    assert gather_rows(accelerator, torch.zeros(0, 2), 2).shape == (0, 2)
