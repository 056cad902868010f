"""Group-aware stratified assignment of samples to splits and cross-validation folds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

__all__ = ["assign_groups", "make_splits", "quantile_strata"]


def assign_groups(
    strata: Sequence[str], groups: Sequence[str], weights: Sequence[float], seed: int
) -> np.ndarray:
    """Assign each sample a bucket index so that no group spans two buckets, bucket sizes
    follow `weights` and each stratum is spread like the whole.

    scikit-learn's StratifiedGroupKFold does this for equal folds only; this greedy
    version also takes unequal weights (e.g. 70/20/10 train/val/test).
    """
    weights = np.asarray(weights, dtype=float) / np.sum(weights)
    labels = sorted(set(strata))
    label_index = {label: i for i, label in enumerate(labels)}
    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    counts = {
        g: np.bincount([label_index[strata[i]] for i in idx], minlength=len(labels))
        for g, idx in members.items()
    }
    totals = np.bincount([label_index[s] for s in strata], minlength=len(labels)).astype(float)
    # Large groups first (they are the hard ones to place); ties in a seeded random order.
    rng = np.random.default_rng(seed)
    names = sorted(members)
    tie_break = dict(zip(names, rng.permutation(len(names)), strict=False))
    order = sorted(names, key=lambda g: (-len(members[g]), tie_break[g]))

    filled = np.zeros((len(weights), len(labels)))
    target = weights[:, None] * totals[None, :]  # samples of each label each bucket should get
    bucket_of = np.empty(len(strata), dtype=np.int64)
    for group in order:
        c = counts[group]
        # The share each bucket still lacks, relative to its target, for this group's labels
        # and in total: relative, so that a small bucket (val, test) gets its turn too.
        label_need = ((target - filled) / np.maximum(target, 1e-9)) @ c / max(c.sum(), 1)
        size_need = (target.sum(1) - filled.sum(1)) / np.maximum(target.sum(1), 1e-9)
        bucket = int(np.argmax(label_need + size_need))
        filled[bucket] += c
        bucket_of[members[group]] = bucket
    return bucket_of


def quantile_strata(values: Sequence[float], bins: int = 5) -> list[str]:
    """Bin a regression target into quantiles so that it can be stratified on."""
    values = np.asarray(values, dtype=float)
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return [f"q{int(b)}" for b in np.searchsorted(edges, values, side="right")]


def make_splits(
    strata: Sequence[str],
    groups: Sequence[str],
    *,
    val_fraction: float,
    test_fraction: float,
    folds: int,
    seed: int,
) -> tuple[list[str], list[int]]:
    """Return (split, fold) per sample: the test split first, then val, then K folds over
    the non-test samples (fold -1 for test samples, or for all when folds == 0)."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("val and test fractions must be in [0, 1) and sum to less than 1")
    train_fraction = 1.0 - val_fraction - test_fraction
    names = ["train", "val", "test"]
    weights = [train_fraction, val_fraction, test_fraction]
    kept = [i for i, w in enumerate(weights) if w > 0]
    bucket = assign_groups(strata, groups, [weights[i] for i in kept], seed)
    split = [names[kept[b]] for b in bucket]
    fold = [-1] * len(split)
    if folds > 1:
        pool = [i for i, s in enumerate(split) if s != "test"]
        pooled = len({groups[i] for i in pool})
        if pooled < folds:
            raise ValueError(
                f"{folds} folds need at least {folds} groups (subjects) outside the test "
                f"split, and there are {pooled}; use fewer folds"
            )
        fold_of = assign_groups(
            [strata[i] for i in pool], [groups[i] for i in pool], [1.0] * folds, seed + 1
        )
        for i, f in zip(pool, fold_of, strict=False):
            fold[i] = int(f)
    return split, fold
