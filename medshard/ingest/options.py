"""Options every ingest shares: splits, shard limits, the error policy and where it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["IngestOptions", "TableIngestOptions", "VolumeIngestOptions"]


class IngestOptions(BaseModel):
    """The CLI flags map onto these fields; each source kind adds its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out: Path
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    folds: int = 0
    seed: int = 0
    shard_bytes: int = 256 * 2**20
    shard_samples: int = 10_000
    on_error: Literal["fail", "skip"] = "fail"
    workers: int | None = None
    scheduler: str | None = None
    processes: bool = True
    overwrite: bool = False
    quiet: bool = False

    def identity(self) -> dict:
        """The options that decide the dataset's content (not how or where it is built)."""
        runtime = {"out", "workers", "scheduler", "processes", "overwrite", "quiet"}
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in runtime}


class VolumeIngestOptions(IngestOptions):
    """What every volume and video ingest adds: how its arrays are laid out."""

    patch_size: tuple[int, int, int] = (64, 64, 64)
    crops: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None


class TableIngestOptions(IngestOptions):
    """What every ingest driven by a CSV table adds: where its paths lead, and the columns
    that give keys, groups and splits."""

    table: Path
    root: Path | None = None  # paths are relative to this; default: the table's folder
    allow_outside_root: bool = False
    key_col: str | None = None
    group_col: str | None = None
    split_col: str | None = None

    @property
    def data_root(self) -> Path:
        return self.root or self.table.parent
