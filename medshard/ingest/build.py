"""Shards of a dataset, each written whole by one independent task (the staging and
the swap into place are in output.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from medshard.errors import BadInputError
from medshard.shards.layout import shard_name
from medshard.shards.tar_writer import ShardSummary, TarShardWriter

T = TypeVar("T")

__all__ = [
    "MemberSource",
    "SampleSpec",
    "ShardTask",
    "plan_shards",
    "write_shard",
]


@dataclass(frozen=True)
class MemberSource:
    """A member whose bytes are a source file, copied unchanged and checked on the way."""

    path: str
    sha256: str


@dataclass(frozen=True)
class SampleSpec:
    key: str
    members: tuple[tuple[str, bytes | MemberSource], ...]  # (field, payload) in tar order
    size: int  # payload bytes, for planning shard sizes


@dataclass(frozen=True)
class ShardTask:
    dataset_dir: str
    split: str
    path: str  # relative shard path
    samples: tuple[SampleSpec, ...]


def plan_shards(
    split: str,
    items: Sequence[T],
    *,
    sizes: Sequence[int],
    counts: Sequence[int] | None = None,
    max_bytes: int,
    max_samples: int,
) -> list[tuple[str, list[T]]]:
    """Cut one split's items, in order, into shards under both limits; an item (a sample,
    or a volume with all its crops) stays whole and holds `counts[i]` samples."""
    counts = counts if counts is not None else [1] * len(items)
    shards: list[list[T]] = []
    size = samples = 0
    for item, item_size, item_count in zip(items, sizes, counts):
        if not shards or (
            shards[-1] and (size + item_size > max_bytes or samples + item_count > max_samples)
        ):
            shards.append([])
            size = samples = 0
        shards[-1].append(item)
        size += item_size
        samples += item_count
    return [(shard_name(split, i), chunk) for i, chunk in enumerate(shards)]


def _payload(data: bytes | MemberSource) -> bytes:
    if isinstance(data, bytes):
        return data
    try:
        raw = Path(data.path).read_bytes()
    except OSError as exc:
        raise BadInputError(data.path, f"the file could not be read ({exc.strerror})") from exc
    if hashlib.sha256(raw).hexdigest() != data.sha256:
        raise BadInputError(data.path, "the file changed while it was being ingested")
    return raw


def write_shard(
    task: ShardTask,
) -> tuple[ShardSummary, list[tuple[str, int, int, list[str], str]]]:
    """Write one whole shard (a Dask task): returns its summary and, per sample,
    (key, offset, bytes, fields, sha256 of the sample's bytes)."""
    placed = []
    with TarShardWriter(task.dataset_dir, task.path) as writer:
        for sample in task.samples:
            members = [(field, _payload(data)) for field, data in sample.members]
            location = writer.add(sample.key, members)
            fields = [f for f, _ in members]
            placed.append((sample.key, location.offset, location.bytes, fields, location.sha256))
        summary = writer.close()
    return summary, placed
