"""The dataset card `medshard.json`: what a dataset holds. Written last, so its presence
marks a complete dataset."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medshard.errors import CorruptDataError, DatasetError, FormatVersionError
from medshard.shards.atomic import atomic_write_bytes
from medshard.shards.checksums import file_checksums
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
    # mean and std of the voxel sample clipped to [p0_5, p99_5]: what a volume is divided
    # by after that clip, so that a few extreme voxels cannot flatten all the others
    clipped_mean: list[float] | None = None
    clipped_std: list[float] | None = None


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
    # sha256 of every other file (checksums.checked_files); None in cards written before
    # checksums, whose files are then read unchecked
    checksums: dict[str, str] | None = None
    stats: ChannelStats | None = None
    channels: int | None = None  # channels of every batch by default: those of `stats`
    rejected: int = 0
    sources: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    command: str = ""
    fingerprint: str
    created_by: str
    # The sha256 of the card's own content without this field (canonical JSON): a card
    # cannot list its own file's checksum, and an edit that keeps it valid JSON (a changed
    # mean, a renamed label) must not go unseen.
    card_sha256: str | None = None

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
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: the dataset card is damaged: it is not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: the dataset card is damaged: it is not a JSON object")
    if raw.get("format") != FORMAT_NAME:
        raise DatasetError(f"{path}: not a medshard dataset card (format={raw.get('format')!r})")
    version = raw.get("format_version")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise FormatVersionError(
            f"{path}: format version {version!r} is not supported; "
            f"this medshard reads format versions {readable}"
        )
    stated = raw.get("card_sha256")
    if stated is not None and stated != _content_sha256(raw):
        raise CorruptDataError(
            f"{path}: checksum mismatch: the dataset card is damaged or was edited after ingest"
        )
    try:
        return DatasetCard.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the card"
        raise DatasetError(
            f"{path}: the dataset card is damaged or was edited: {where}: {first['msg']}"
        ) from exc


def write_card(dataset: str | Path, card: DatasetCard) -> DatasetCard:
    """Write the card atomically and return it as written; call it last, after every other
    file, whose checksums it records unless the card already gives them. Refuses
    non-finite numbers."""
    if card.checksums is None:
        checksums = file_checksums(dataset, [shard.path for shard in card.shards])
        card = card.model_copy(update={"checksums": checksums})
    data = card.model_dump(mode="json")
    data["card_sha256"] = _content_sha256(data)
    card = card.model_copy(update={"card_sha256": data["card_sha256"]})
    where = _non_finite(data)
    if where is not None:
        raise DatasetError(
            f"{Path(dataset) / CARD_NAME}: field {where} is not a finite number; "
            "a dataset card holds only finite numbers"
        )
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write_bytes(Path(dataset) / CARD_NAME, text.encode())
    return card


def _content_sha256(card: dict) -> str:
    """sha256 of the card's content as canonical JSON, its own checksum left out."""
    content = {k: v for k, v in card.items() if k != "card_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _non_finite(value: Any, where: str = "") -> str | None:
    """The path of the first NaN or infinity in a JSON-like value (e.g. 'stats.mean[0]')."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((found for w, v in items if (found := _non_finite(v, w)) is not None), None)
