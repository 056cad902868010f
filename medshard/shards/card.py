"""The dataset card `medshard.json`: what a dataset holds. Written last, so its presence
marks a complete dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medshard.errors import DatasetError, FormatVersionError
from medshard.shards.atomic import atomic_write_bytes
from medshard.shards.layout import CARD_NAME, FORMAT_NAME, FORMAT_VERSION, READABLE_VERSIONS

__all__ = ["ShardInfo", "SplitCounts", "ChannelStats", "DatasetCard", "read_card", "write_card"]

Kind = Literal["images", "volumes", "video"]
Task = Literal["classification", "multilabel", "regression"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShardInfo(_Frozen):
    path: str
    split: str
    samples: int
    bytes: int
    sha256: str


class SplitCounts(_Frozen):
    samples: int
    per_label: dict[str, int] = Field(default_factory=dict)


class ChannelStats(_Frozen):
    """Per-channel intensity statistics over the training split: in stored units for volumes
    and video; for 2D images in unit scale (each sample divided by its own bit depth's
    maximum, 255 or 65535; float images as stored) over the card's `channels`, alpha
    dropped and a gray sample counted in every channel."""

    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    p0_5: list[float] | None = None  # 0.5th percentile (volumes; from a voxel sample)
    p99_5: list[float] | None = None  # 99.5th percentile


class DatasetCard(_Frozen):
    format: Literal["medshard"] = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    kind: Kind
    task: Task | None = None
    fields: list[str]
    label_names: list[str] = Field(default_factory=list)
    target_name: str | None = None
    counts: dict[str, SplitCounts]
    folds: int = 0
    channel_names: list[str] = Field(default_factory=list)
    crop_size: list[int] | None = None  # volume datasets that also stream fixed crops
    shards: list[ShardInfo] = Field(default_factory=list)
    stats: ChannelStats | None = None
    channels: int | None = None  # channels of every batch by default: those of `stats`
    rejected: int = 0
    sources: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    command: str = ""
    fingerprint: str
    created_by: str

    @model_validator(mode="before")
    @classmethod
    def _channels_of_stats(cls, data: Any) -> Any:
        """A card that does not give its channel count has that of its statistics."""
        if isinstance(data, dict) and data.get("channels") is None and data.get("stats"):
            stats = data["stats"]
            mean = stats["mean"] if isinstance(stats, dict) else stats.mean
            data = {**data, "channels": len(mean)}
        return data

    @property
    def splits(self) -> list[str]:
        return list(self.counts)

    @property
    def total_samples(self) -> int:
        return sum(c.samples for c in self.counts.values())


def read_card(dataset: str | Path) -> DatasetCard:
    """Read and validate `DATASET/medshard.json`; refuse versions this reader does not know."""
    path = Path(dataset) / CARD_NAME
    if not path.is_file():
        raise DatasetError(f"{dataset}: not a medshard dataset (no {CARD_NAME})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: the dataset card is not valid JSON ({exc})") from exc
    if raw.get("format") != FORMAT_NAME:
        raise DatasetError(f"{path}: not a medshard dataset card (format={raw.get('format')!r})")
    version = raw.get("format_version")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise FormatVersionError(
            f"{path}: format version {version!r} is not supported; "
            f"this medshard reads format versions {readable}"
        )
    return DatasetCard.model_validate(raw)


def write_card(dataset: str | Path, card: DatasetCard) -> None:
    """Write the card atomically; call it last, after every shard and the manifest."""
    text = json.dumps(card.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(Path(dataset) / CARD_NAME, text.encode())
