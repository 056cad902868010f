"""The global batch: samples per rank × ranks × accumulation steps, the samples of one
optimizer step. A mid-epoch checkpoint resumes on another number of ranks only with the
same global batch, so that each optimizer step of the rest of the epoch takes the samples
it would have taken (loaders/partition.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from medshard.trainers.checkpoint import CheckpointError

__all__ = ["BatchGeometry", "refuse_another_global_batch"]


@dataclass(frozen=True)
class BatchGeometry:
    per_rank: int
    ranks: int
    accumulate: int

    @property
    def global_batch(self) -> int:
        return self.per_rank * self.ranks * self.accumulate

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        ranks = "rank" if self.ranks == 1 else "ranks"
        steps = "step" if self.accumulate == 1 else "steps"
        return (
            f"{self.per_rank} per rank × {self.ranks} {ranks} × {self.accumulate} "
            f"accumulation {steps}"
        )


def refuse_another_global_batch(folder: Path, saved: dict | None, now: BatchGeometry) -> None:
    """Refuse to resume a mid-epoch checkpoint taken with another global batch."""
    if saved is None:  # written before checkpoints recorded it: nothing to compare
        return
    before = BatchGeometry(**saved)
    if before.global_batch == now.global_batch:
        return
    target = before.global_batch
    if target % (now.per_rank * now.ranks) == 0:
        hint = f"optim.accumulate={target // (now.per_rank * now.ranks)}"
    elif target % (now.ranks * now.accumulate) == 0:
        hint = f"loader.batch_size={target // (now.ranks * now.accumulate)}"
    else:
        hint = f"a batch per rank × ranks × optim.accumulate of {target}"
    raise CheckpointError(
        f"{folder}: cannot resume this mid-epoch checkpoint with a global batch of "
        f"{now.global_batch} ({now.describe()}) because it was taken with a global batch "
        f"of {target} ({before.describe()}); resume with the same global batch, e.g. "
        f"with {hint}"
    )
