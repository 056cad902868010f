"""Read a dataset: its card, manifest, splits, shards, fields, and raw samples as bytes."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa

from medshard.errors import DatasetError
from medshard.shards.card import DatasetCard, ShardInfo, read_card
from medshard.shards.checksums import check_file
from medshard.shards.layout import MANIFEST_NAME, index_name, split_member_name
from medshard.shards.manifest import read_manifest

__all__ = [
    "Dataset",
    "RawSample",
    "TarSample",
    "check_tar_end",
    "iter_tar_samples",
    "open_dataset",
    "walk_shard",
]

RawSample = dict[str, object]  # {"__key__": str, "__shard__": str, "<field>": bytes, ...}


def check_tar_end(path: str | Path) -> None:
    """Refuse a tar cut short: Python's tarfile takes a cut at a member boundary for the end."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(size - 2 * tarfile.BLOCKSIZE, 0))
        tail = handle.read()
    if size % tarfile.BLOCKSIZE or size < 2 * tarfile.BLOCKSIZE or tail.strip(b"\0"):
        raise DatasetError(f"{path}: the shard is truncated (it has no end-of-archive marker)")


@dataclass(frozen=True)
class TarSample:
    """One sample of a shard as stored: its key, where its first header starts, and its
    members as (field, offset of the data, data), in tar order."""

    key: str
    offset: int
    members: list[tuple[str, int, bytes]]


def walk_shard(path: str | Path) -> Iterator[TarSample]:
    """The samples of one tar shard in order, members grouped by key; a shard cut short,
    a member cut short or a member named twice is refused."""
    current: TarSample | None = None
    try:
        check_tar_end(path)
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, field = split_member_name(info.name)
                if current is not None and current.key != key:
                    yield current
                    current = None
                if current is None:
                    current = TarSample(key, info.offset, [])
                if any(field == name for name, _, _ in current.members):
                    raise DatasetError(f"{path}: member {info.name!r} appears twice")
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise DatasetError(f"{path}: member {info.name!r} is truncated")
                current.members.append((field, info.offset_data, data))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{path}: the shard is truncated or corrupt ({exc})") from exc
    if current is not None:
        yield current


def iter_tar_samples(path: str | Path) -> Iterator[RawSample]:
    """Yield the samples of one tar shard in order as {"__key__", "__shard__", field: bytes}."""
    for sample in walk_shard(path):
        yield {
            "__key__": sample.key,
            "__shard__": str(path),
            **{field: data for field, _, data in sample.members},
        }


class Dataset:
    """A medshard dataset on disk (format version 1)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.card: DatasetCard = read_card(self.path)
        self._manifest_checked = False

    def check_manifest(self) -> None:
        """Refuse a manifest that differs from the card's checksum, before parsing it."""
        if not self._manifest_checked:
            check_file(self.path, MANIFEST_NAME, (self.card.checksums or {}).get(MANIFEST_NAME))
            self._manifest_checked = True

    @cached_property
    def manifest(self) -> pa.Table:
        self.check_manifest()
        return read_manifest(self.path)

    @property
    def splits(self) -> list[str]:
        return self.card.splits

    @property
    def fields(self) -> list[str]:
        return list(self.card.fields)

    def require_split(self, split: str) -> None:
        """Raise a clear error when `split` is not one of the dataset's splits."""
        if split not in self.card.counts:
            raise DatasetError(
                f"{self.path}: no split {split!r}; the splits are {', '.join(self.splits)}"
            )

    def shards(self, split: str | None = None) -> list[ShardInfo]:
        """The shards of one split (or of all splits), in order."""
        if split is not None:
            self.require_split(split)
        return [s for s in self.card.shards if split is None or s.split == split]

    def shard_paths(self, split: str | None = None) -> list[Path]:
        return [self.path / s.path for s in self.shards(split)]

    def index_paths(self, split: str | None = None) -> list[Path]:
        return [self.path / index_name(s.path) for s in self.shards(split)]

    def samples(self, split: str) -> Iterator[RawSample]:
        """Yield the raw samples of a split in storage order: members as bytes, no decoding."""
        for shard in self.shard_paths(split):
            yield from iter_tar_samples(shard)

    def __len__(self) -> int:
        return self.card.total_samples

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, kind={self.card.kind!r}, samples={len(self)})"


def open_dataset(path: str | Path) -> Dataset:
    """Open a dataset directory; raises DatasetError when it is not a complete dataset, and
    CorruptDataError when its manifest differs from the card's checksum."""
    dataset = Dataset(path)
    dataset.check_manifest()
    return dataset
