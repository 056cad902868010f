"""The global batch that a mid-epoch resume must keep, and the sentence that refuses
another one with a way to keep it."""

from pathlib import Path

import pytest

from medshard.trainers.checkpoint import CheckpointError
from medshard.trainers.geometry import BatchGeometry, refuse_another_global_batch


def test_the_global_batch_is_per_rank_times_ranks_times_accumulation():
    assert BatchGeometry(4, 2, 3).global_batch == 24
    assert BatchGeometry(4, 1, 1).describe() == "4 per rank × 1 rank × 1 accumulation step"
    assert BatchGeometry(4, 8, 2).describe() == "4 per rank × 8 ranks × 2 accumulation steps"


@pytest.mark.parametrize(
    ("saved", "now"), [((4, 2, 1), (4, 1, 2)), ((4, 1, 2), (8, 1, 1)), ((2, 4, 1), (4, 2, 1))]
)
def test_the_same_global_batch_on_other_ranks_resumes(saved, now):
    refuse_another_global_batch(Path("last"), BatchGeometry(*saved).as_dict(), BatchGeometry(*now))


@pytest.mark.parametrize(
    ("saved", "now", "hint"),
    [
        ((4, 2, 1), (4, 1, 1), "optim.accumulate=2"),
        ((4, 2, 1), (4, 4, 1), "loader.batch_size=2"),
        ((3, 2, 1), (4, 4, 1), "a batch per rank × ranks × optim.accumulate of 6"),
    ],
)
def test_another_global_batch_is_refused_with_a_way_to_keep_it(saved, now, hint):
    before, after = BatchGeometry(*saved), BatchGeometry(*now)
    with pytest.raises(CheckpointError) as refused:
        refuse_another_global_batch(Path("runs/last"), before.as_dict(), after)
    assert str(refused.value) == (
        f"runs/last: cannot resume this mid-epoch checkpoint with a global batch of "
        f"{after.global_batch} ({after.describe()}) because it was taken with a global batch "
        f"of {before.global_batch} ({before.describe()}); resume with the same global batch, "
        f"e.g. with {hint}"
    )
