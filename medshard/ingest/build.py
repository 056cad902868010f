"""Shards of a dataset, each written whole by one independent task (the staging and
the swap into place are in output.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from medshard.errors import BadInputError
from medshard.ingest.cluster import run_tasks
from medshard.ingest.members import json_member, label_members
from medshard.shards.card import ShardInfo
from medshard.shards.layout import shard_name
from medshard.shards.tar_writer import ShardSummary, TarShardWriter

T = TypeVar("T")

__all__ = [
    "MemberSource",
    "SampleSpec",
    "ShardTask",
    "plan_shards",
    "shard_info",
    "write_sample_shards",
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


def shard_info(summary: ShardSummary, split: str) -> ShardInfo:
    """What the card records of a written shard."""
    return ShardInfo(
        path=summary.path,
        split=split,
        samples=summary.samples,
        bytes=summary.bytes,
        sha256=summary.sha256,
    )


def write_sample_shards(
    client,
    dataset_dir: Path,
    stored: list[tuple[dict, dict]],
    label_names: Sequence[str],
    *,
    max_bytes: int,
    max_samples: int,
    quiet: bool,
) -> list[ShardInfo]:
    """Samples kept as encoded bytes go into shards per split, in key order; each shard is
    one task. Fills in each manifest row's shard, offset and members."""
    tasks = []
    for split in sorted({row["split"] for row, _ in stored}):
        in_split = sorted((p for p in stored if p[0]["split"] == split), key=lambda p: p[0]["key"])
        specs = [_sample_spec(row, record, label_names) for row, record in in_split]
        for path, chunk in plan_shards(
            split,
            specs,
            sizes=[s.size for s in specs],
            max_bytes=max_bytes,
            max_samples=max_samples,
        ):
            tasks.append(ShardTask(str(dataset_dir), split, path, tuple(chunk)))
    written = run_tasks(client, write_shard, tasks, description="write shards", quiet=quiet)
    rows = {row["key"]: row for row, _ in stored}
    for summary, placed in written:
        for key, offset, nbytes, fields, digest in placed:
            rows[key].update(
                shard=summary.path,
                offset=offset,
                members=fields,
                bytes=nbytes,
                sample_sha256=digest,
            )
    return [shard_info(summary, task.split) for task, (summary, _) in zip(tasks, written)]


def _sample_spec(row: dict, record: dict, label_names) -> SampleSpec:
    """The tar members of one stored sample: its bytes unchanged, then the labels."""
    labels, about = label_members(row, label_names)
    about |= {"key": row["key"], "subject": row["subject"], "source": row["source"][0]}
    small = [*labels, json_member(about)]
    members = [record["member"], *record["extra"], *small]
    size = record["bytes"] + record["extra_bytes"] + sum(len(data) for _, data in small)
    return SampleSpec(key=row["key"], members=tuple(members), size=size)
