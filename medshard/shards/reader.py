"""Read a dataset: its card, manifest, splits, shards, fields, and raw samples as bytes."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from medshard.errors import DatasetError
from medshard.shards.card import DatasetCard, ShardInfo, read_card
from medshard.shards.checksums import check_file
from medshard.shards.layout import MANIFEST_NAME, index_name, split_member_name
from medshard.shards.manifest import read_manifest
from medshard.shards.mirror import Mirror
from medshard.shards.storage import is_url

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


def check_tar_end(path: str | Path, handle: BinaryIO | None = None) -> None:
    """Refuse a tar cut short: Python's tarfile takes a cut at a member boundary for the end.
    `handle`, when given, is the shard already open (`path` then only names it)."""
    if handle is None:
        with open(path, "rb") as own:
            return check_tar_end(path, own)
    size = handle.seek(0, 2)
    handle.seek(max(size - 2 * tarfile.BLOCKSIZE, 0))
    tail = handle.read()
    handle.seek(0)
    if size % tarfile.BLOCKSIZE or size < 2 * tarfile.BLOCKSIZE or tail.strip(b"\0"):
        raise DatasetError(f"{path}: the shard is truncated (it has no end-of-archive marker)")


@dataclass(frozen=True)
class TarSample:
    """One sample of a shard as stored: its key, where its first header starts, and its
    members as (field, offset of the data, data), in tar order."""

    key: str
    offset: int
    members: list[tuple[str, int, bytes]]


def walk_shard(path: str | Path, handle: BinaryIO | None = None) -> Iterator[TarSample]:
    """The samples of one tar shard in order, members grouped by key; a shard cut short,
    a member cut short or a member named twice is refused. `handle`, when given, is the
    shard already open (`path` then only names it)."""
    current: TarSample | None = None
    try:
        check_tar_end(path, handle)
        with tarfile.open(path if handle is None else None, mode="r:", fileobj=handle) as tar:
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


def iter_tar_samples(path: str | Path, handle: BinaryIO | None = None) -> Iterator[RawSample]:
    """Yield the samples of one tar shard in order as {"__key__", "__shard__", field: bytes}."""
    for sample in walk_shard(path, handle):
        yield {
            "__key__": sample.key,
            "__shard__": str(path),
            **{field: data for field, _, data in sample.members},
        }


class Dataset:
    """A medshard dataset (format version 1): a directory, or the cache folder of a dataset
    at an s3:// URL (`mirror`), which reads fetch into on demand."""

    def __init__(self, path: str | Path, mirror: Mirror | None = None):
        self.path = Path(path)
        self.mirror = mirror if mirror is not None else Mirror.at(self.path)
        self.card: DatasetCard = read_card(self.path)
        self._manifest_checked = self.mirror is not None  # checked when it was fetched

    @property
    def location(self) -> str:
        """Where the dataset is: its URL, or its directory."""
        return self.mirror.url if self.mirror is not None else str(self.path)

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
                f"{self.location}: no split {split!r}; the splits are {', '.join(self.splits)}"
            )

    def shards(self, split: str | None = None) -> list[ShardInfo]:
        """The shards of one split (or of all splits), in order."""
        if split is not None:
            self.require_split(split)
        return [s for s in self.card.shards if split is None or s.split == split]

    def shard_paths(self, split: str | None = None) -> list[Path]:
        """Local files of the shards, all of them at once (DALI's readers open every one):
        a remote split is fetched whole, and refused when it does not fit in the cache."""
        shards = self.shards(split)
        if self.mirror is not None:
            self._fit_whole(shards, split)
            return [self.mirror.local_file(s.path, s.bytes, s.sha256) for s in shards]
        return [self.path / s.path for s in shards]

    def index_paths(self, split: str | None = None) -> list[Path]:
        names = [index_name(s.path) for s in self.shards(split)]
        if self.mirror is None:
            return [self.path / n for n in names]
        checksums = self.card.checksums or {}
        with ThreadPoolExecutor(4) as pool:  # small files: a request's latency each
            return list(pool.map(lambda n: self.mirror.local_file(n, 0, checksums.get(n)), names))

    def samples(self, split: str) -> Iterator[RawSample]:
        """Yield the raw samples of a split in storage order: members as bytes, no decoding."""
        for shard in self.shards(split):
            if self.mirror is None:
                yield from iter_tar_samples(self.path / shard.path)
                continue
            fd = self.mirror.open_file(shard.path, shard.bytes, shard.sha256)
            with os.fdopen(fd, "rb") as handle:  # read even if evicted meanwhile
                yield from iter_tar_samples(self.path / shard.path, handle)

    def prefetch(self, keys: Iterable[str], threads: int = 4, ahead: bool = False) -> int:
        """Fetch what these samples will read into the cache, in order, as far as half of
        it holds (a remote dataset; nothing to do on disk): each Zarr sample's group, and
        the shards of a split that is read whole; `ahead` of the plan, only what fits.
        Returns how many entries are there."""
        if self.mirror is None:
            return 0
        rows = self._rows
        return self.mirror.prefetch((rows[k] for k in keys if k in rows), threads, ahead)

    @cached_property
    def _rows(self) -> dict[str, dict]:
        return {row["key"]: row for row in self.manifest.to_pylist()}

    def _fit_whole(self, shards: list[ShardInfo], split: str | None) -> None:
        from rich.filesize import decimal

        size = sum(s.bytes for s in shards)
        limit = self.mirror.limit
        if limit is not None and self.mirror.pinned + size > limit:
            what = f"split {split!r}" if split else "the dataset"
            raise DatasetError(
                f"{self.location}: {what} holds {len(shards)} shards of {decimal(size)} in "
                f"all, more than the cache_limit of {decimal(limit)} holds at once beside the "
                "tables; reading every shard at once (DALI) needs a larger cache_limit, "
                "or use backend='torch', which reads sample by sample"
            )

    def __len__(self) -> int:
        return self.card.total_samples

    def __repr__(self) -> str:
        return f"Dataset({self.location!r}, kind={self.card.kind!r}, samples={len(self)})"


def open_dataset(
    path: str | Path,
    *,
    cache_dir: str | Path | None = None,
    cache_limit: int | str | None = None,
    endpoint_url: str | None = None,
) -> Dataset:
    """Open a dataset directory or an s3:// URL; raises DatasetError when it is not a
    complete dataset, and CorruptDataError when its manifest differs from the card's
    checksum. A URL's files are fetched on demand into `cache_dir` (mirror.cache_root),
    at most `cache_limit` bytes of them ('20GB'; None: no limit), from `endpoint_url`
    (an S3-compatible store; default: $MEDSHARD_S3_ENDPOINT, else AWS's)."""
    if is_url(path):
        mirror = Mirror.open(
            path, cache_dir=cache_dir, cache_limit=cache_limit, endpoint_url=endpoint_url
        )
        return Dataset(mirror.root, mirror)
    dataset = Dataset(path)
    dataset.check_manifest()
    return dataset
