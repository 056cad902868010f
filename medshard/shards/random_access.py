"""Read one sample from a shard by the offset and size the manifest gives: the random
access that exact shuffling, partitioning and mid-epoch resume are built on."""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

from medshard.errors import CorruptDataError, DatasetError
from medshard.shards.layout import split_member_name
from medshard.shards.mirror import Mirror
from medshard.shards.open_files import OpenFiles
from medshard.shards.reader import RawSample

__all__ = ["ShardFiles", "member_spans", "parse_sample"]

_BLOCK = tarfile.BLOCKSIZE


def member_spans(data: bytes, shard: str, key: str) -> dict[str, tuple[int, int]]:
    """Where each member's payload lies in one sample's tar bytes: {field: (start, size)}."""
    spans = {}
    position = 0
    while position < len(data):
        try:
            info = tarfile.TarInfo.frombuf(data[position : position + _BLOCK], "utf-8", "strict")
        except tarfile.HeaderError as exc:
            raise DatasetError(
                f"{shard}: sample {key!r} has a corrupt member header ({exc})"
            ) from exc
        member_key, field = split_member_name(info.name)
        if member_key != key:
            raise DatasetError(f"{shard}: found {info.name!r} where the manifest puts {key!r}")
        start = position + _BLOCK
        if start + info.size > len(data):
            raise DatasetError(f"{shard}: sample {key!r} is truncated")
        spans[field] = (start, info.size)
        position = start + -(-info.size // _BLOCK) * _BLOCK
    return spans


def parse_sample(data: bytes, shard: str, key: str) -> RawSample:
    """Split the bytes of one sample's tar members into {field: payload}."""
    sample: RawSample = {"__key__": key, "__shard__": shard}
    for field, (start, size) in member_spans(data, shard, key).items():
        sample[field] = data[start : start + size]
    return sample


class ShardFiles:
    """Open shard files of one dataset, read with pread; one instance per worker. The
    cache folder of a remote dataset (mirror) is read through its cache instead."""

    def __init__(self, dataset: str | Path):
        self.dataset = Path(dataset)
        self._files = OpenFiles()
        self._mirror: Mirror | None | bool = False  # False: not looked up yet
        self._windows: dict[str, int] = {}  # splits read a few shards at a time

    @property
    def mirror(self) -> Mirror | None:
        if self._mirror is False:
            self._mirror = Mirror.at(self.dataset)
            if self._mirror is not None:
                self._mirror.store.adopt(getattr(self, "_handed", None))
                for split, shards in self._windows.items():
                    self._mirror.read_by_windows(split, shards)
        return self._mirror

    def read_by_windows(self, splits: Iterable[str], shards: int) -> None:
        """The plan reads `splits` `shards` shards at a time: from a URL, their shards
        are then fetched whole where the cache has room (Mirror.read_by_windows), by
        this reader and by the copies of it that worker processes get."""
        splits = tuple(splits)
        self._windows |= dict.fromkeys(splits, shards)
        if self.mirror is not None:
            for split in splits:
                self.mirror.read_by_windows(split, shards)

    def read(
        self, shard: str, offset: int, nbytes: int, key: str, sha256: str | None = None
    ) -> RawSample:
        """The members of sample `key`; checked against `sha256` (the manifest's
        `sample_sha256`) when given."""
        return parse_sample(self.sample_bytes(shard, offset, nbytes, key, sha256), shard, key)

    def sample_bytes(
        self, shard: str, offset: int, nbytes: int, key: str, sha256: str | None = None
    ) -> bytes:
        """The tar bytes of sample `key`, as `read` checks them."""
        mirror = self.mirror
        data, where = self.read_range(shard, offset, nbytes), self.where(shard)
        intact = sha256 is None or hashlib.sha256(data).hexdigest() == sha256
        if not intact and mirror is not None:  # a cached copy damaged on local disk
            data = mirror.read_again(shard, offset, nbytes)
            intact = hashlib.sha256(data).hexdigest() == sha256
        if len(data) != nbytes:
            raise DatasetError(f"{shard}: the shard is truncated before sample {key!r}")
        if not intact:
            raise CorruptDataError(
                f"{where}: sample {key!r}: checksum mismatch: "
                "the shard is damaged or was changed after ingest"
            )
        return data

    def read_range(self, shard: str, offset: int, nbytes: int) -> bytes:
        """`nbytes` of `shard` from `offset`, unchecked: a pread, or through the cache of a
        dataset at a URL."""
        if self.mirror is None:
            return os.pread(self._fd(shard), nbytes, offset)
        return self.mirror.read(shard, offset, nbytes)

    def in_files(self, shard: str) -> bool:
        """Whether `shard` is read from a file here (on disk, or whole in the cache of a
        dataset at a URL), not by range from the store."""
        return self.mirror is None or self.mirror.in_files(shard)

    def where(self, name: str) -> str:
        """What a message calls file `name` of the dataset: its path, or its object's URL."""
        if self.mirror is None:
            return str(self.dataset / name)
        return self.mirror.store.object_url(name)

    def _fd(self, shard: str) -> int:
        try:
            return self._files.fd(shard, self.dataset / shard)
        except OSError as exc:
            raise DatasetError(f"{shard}: cannot open the shard ({exc.strerror})") from exc

    def forget(self, shard: str) -> None:
        """Open `shard` afresh at its next read (it changed on disk)."""
        self._files.forget(shard)

    def close(self) -> None:
        self._files.close()

    def __getstate__(self):  # file descriptors and clients do not cross into worker processes
        handed = self.mirror.store.handed() if self.mirror is not None else None
        return {
            "dataset": self.dataset,
            "_files": OpenFiles(),
            "_mirror": False,
            "_handed": handed,
            "_windows": self._windows,
        }
