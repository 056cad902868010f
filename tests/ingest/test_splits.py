from collections import Counter, defaultdict

import numpy as np
import pytest

from medshard.ingest.splits import make_splits, quantile_strata


def data(n=900, groups=250, seed=0):
    rng = np.random.default_rng(seed)
    group = [f"g{int(g)}" for g in rng.integers(0, groups, n)]
    strata = [str(s) for s in rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1])]
    return strata, group


def test_groups_stay_whole_across_splits_and_folds():
    strata, groups = data()
    split, fold = make_splits(strata, groups, val_fraction=0.2, test_fraction=0.1, folds=5, seed=3)
    placed = defaultdict(set)
    for g, s, f in zip(groups, split, fold, strict=False):
        placed[g].add((s, f))
    assert all(len(p) == 1 for p in placed.values())


def test_split_sizes_and_label_ratios_follow_the_request():
    strata, groups = data()
    split, _ = make_splits(strata, groups, val_fraction=0.2, test_fraction=0.1, folds=0, seed=0)
    sizes = Counter(split)
    assert abs(sizes["val"] / len(split) - 0.2) < 0.03
    assert abs(sizes["test"] / len(split) - 0.1) < 0.03
    overall = Counter(strata)
    for name in ("train", "val", "test"):
        part = Counter(s for s, sp in zip(strata, split, strict=False) if sp == name)
        for label in overall:
            assert abs(part[label] / sizes[name] - overall[label] / len(strata)) < 0.05


def test_folds_cover_non_test_samples_evenly():
    strata, groups = data()
    split, fold = make_splits(strata, groups, val_fraction=0.0, test_fraction=0.2, folds=4, seed=1)
    assert all((f == -1) == (s == "test") for s, f in zip(split, fold, strict=False))
    sizes = Counter(f for f in fold if f >= 0)
    assert sorted(sizes) == [0, 1, 2, 3]
    assert max(sizes.values()) - min(sizes.values()) < 0.05 * len(fold)


def test_same_seed_same_split_other_seed_other_split():
    strata, groups = data()
    one = make_splits(strata, groups, val_fraction=0.2, test_fraction=0.0, folds=0, seed=5)
    two = make_splits(strata, groups, val_fraction=0.2, test_fraction=0.0, folds=0, seed=5)
    three = make_splits(strata, groups, val_fraction=0.2, test_fraction=0.0, folds=0, seed=6)
    assert one == two
    assert one != three


def test_quantile_strata_bins_a_target():
    bins = quantile_strata(list(range(100)), bins=4)
    assert Counter(bins) == {"q0": 25, "q1": 25, "q2": 25, "q3": 25}


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="fractions"):
        make_splits(["a"], ["g"], val_fraction=0.6, test_fraction=0.5, folds=0, seed=0)
