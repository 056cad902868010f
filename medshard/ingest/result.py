"""What an ingest run reports: counts per split and label, shards, bytes and speed."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from medshard.shards.card import DatasetCard, SplitCounts

__all__ = ["IngestResult", "count_splits"]


def count_splits(manifest: list[dict], label_names: list[str]) -> dict[str, SplitCounts]:
    """Samples per split, and per label where the dataset has labels."""
    samples: Counter[str] = Counter()
    per_label: dict[str, Counter[str]] = defaultdict(Counter)
    for row in manifest:
        split = row["split"]
        samples[split] += 1
        if row.get("label") is not None:
            per_label[split][label_names[row["label"]]] += 1
        for name, value in zip(label_names, row.get("labels") or [], strict=False):
            per_label[split][name] += int(value)
    order = sorted(samples, key=lambda s: (["train", "val", "test"] + [s]).index(s))
    return {
        s: SplitCounts(samples=samples[s], per_label={n: per_label[s][n] for n in label_names})
        for s in order
    }


@dataclass(frozen=True)
class IngestResult:
    out: Path
    up_to_date: bool = False
    card: DatasetCard | None = None
    seconds: float = 0.0
    source_bytes: int = 0
    frames: int = 0  # video frames decoded (video datasets)
    counts: dict[str, SplitCounts] = field(default_factory=dict)
    built_bytes: int | None = None  # what the build wrote (a dataset at a URL: uploaded)

    @classmethod
    def unchanged(cls, out: Path) -> IngestResult:
        return cls(out=out, up_to_date=True)

    @classmethod
    def from_card(
        cls,
        out: Path,
        card: DatasetCard,
        seconds: float,
        source_bytes: int,
        frames: int = 0,
        built_bytes: int | None = None,
    ) -> IngestResult:
        return cls(
            out=out,
            card=card,
            seconds=seconds,
            source_bytes=source_bytes,
            frames=frames,
            counts=card.counts,
            built_bytes=built_bytes,
        )

    @property
    def samples(self) -> int:
        return sum(c.samples for c in self.counts.values())

    @property
    def shard_bytes(self) -> int:
        return sum(s.bytes for s in self.card.shards) if self.card else 0

    @property
    def dataset_bytes(self) -> int:
        """Everything the dataset holds: shards, Zarr store, manifest, card."""
        if self.built_bytes is not None:
            return self.built_bytes
        return sum(p.stat().st_size for p in self.out.rglob("*") if p.is_file())

    @property
    def mb_per_s(self) -> float:
        """Source megabytes ingested per second of wall time."""
        return self.source_bytes / 1e6 / self.seconds if self.seconds else 0.0
