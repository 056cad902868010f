"""Build a dataset safely: staged in a sibling folder, shards written by independent
tasks, and moved into place only when complete."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from medshard.errors import BadInputError, DatasetError
from medshard.shards.layout import CARD_NAME, shard_name
from medshard.shards.tar_writer import ShardSummary, TarShardWriter

T = TypeVar("T")

__all__ = [
    "check_output",
    "Staging",
    "MemberSource",
    "SampleSpec",
    "ShardTask",
    "plan_shards",
    "write_shard",
]


def check_output(out: Path, fingerprint_: str, overwrite: bool) -> bool:
    """True when the same dataset is already at `out`; refuse to write over anything else
    unless told to."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise DatasetError(f"{out}: the output path exists and is not a directory")
    card = out / CARD_NAME
    if card.is_file():
        try:
            same = json.loads(card.read_text()).get("fingerprint") == fingerprint_
        except json.JSONDecodeError:
            same = False
        if same and not overwrite:
            return True
        if not same and not overwrite:
            raise DatasetError(
                f"{out}: the output directory holds a different dataset; "
                "choose another --out or pass --overwrite to replace it"
            )
        return False
    if any(out.iterdir()) and not overwrite:
        raise DatasetError(
            f"{out}: the output directory is not empty and holds no medshard dataset; "
            "choose an empty or new directory"
        )
    return False


class Staging:
    """A dataset under construction beside its final place; only `commit` makes it visible."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.dir = self.out.parent / f".{self.out.name}.partial-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(parents=True)

    def commit(self) -> None:
        """Swap the finished dataset into place; an old one is removed only afterwards."""
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            self.out.rename(old)
        self.dir.rename(self.out)
        if old is not None:
            shutil.rmtree(old)

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.dir.exists():
            self.abort()


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
