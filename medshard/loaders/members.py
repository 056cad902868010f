"""Read one member of a sample, not the whole sample: where each sample's pixel member
lies in its shard comes from the shard's DALI index (`wds2idx`: field, data offset and
size of every member), and a read is then one `pread` of exactly those bytes (through the
cache of a dataset at a URL). A loader of training copies so skips the original's bytes
and the parsing of tar headers.

The index is trusted only after it agreed once: the first read of each sample reads the
whole sample, checks it against the manifest's checksum and checks that the index's
range holds the member's bytes (`confirm`); only later reads take the short way. A raw
(`.npy`) member is then not read at all: it is a read-only view of the shard's memory map
past its header (its type and shape are kept), so that its pixels are copied once, from
the page cache straight into the batch; in a cache of a dataset at a URL, where a shard may
be evicted, it is read as bytes like any member."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medshard.errors import CorruptDataError, DatasetError
from medshard.shards.layout import index_name
from medshard.shards.open_files import OpenFiles
from medshard.shards.random_access import ShardFiles
from medshard.shards.verify import read_dali_index

__all__ = ["MemberRanges"]


class MemberRanges:
    """The byte range of member `fields` (alternatives) of each of `rows` (manifest rows,
    in the loader's order) in the shards that `files` reads, as the shard indexes at
    `indexes` (by shard name) give them."""

    def __init__(
        self,
        files: ShardFiles,
        indexes: dict[str, Path],
        rows: list[dict],
        fields: tuple[str, ...],
    ):
        self.files = files
        self.names = sorted({r["shard"] for r in rows})
        self.paths = [files.dataset / name for name in self.names]
        self.mapped = files.mirror is None  # raw members as views of a map of the shard
        number = {name: i for i, name in enumerate(self.names)}
        where: dict[str, tuple[str, int, int, str]] = {}
        for name in self.names:
            for sample in read_dali_index(indexes[name]):
                for field, offset, size, member in sample:
                    if field in fields:
                        where[member.split(".", 1)[0]] = (name, offset, size, field)
        missing = [r["key"] for r in rows if r["key"] not in where]
        if missing:
            raise DatasetError(
                f"{files.where(index_name(rows[0]['shard']))}: the shard index lists no "
                f"member {' or '.join(fields)!r} of sample {missing[0]!r}"
            )
        self.shard = np.array([number[where[r["key"]][0]] for r in rows], np.int64)
        self.offset = np.array([where[r["key"]][1] for r in rows], np.int64)
        self.size = np.array([where[r["key"]][2] for r in rows], np.int64)
        self.fields = [where[r["key"]][3] for r in rows]  # which of `fields` each holds
        # raw members' (type, shape, header bytes), once confirmed
        self.arrays: dict[int, tuple[np.dtype, tuple[int, ...], int]] = {}
        self._files = OpenFiles()

    def confirm(self, index: int, payload: bytes, array: np.ndarray | None = None) -> None:
        """Check that sample `index`'s range holds `payload` (its member, read whole and
        checked); for a raw member, keep the `array`'s layout and skip its header."""
        data = self._pread(index, int(self.offset[index]), int(self.size[index]))
        if data != payload:
            shard = self.names[self.shard[index]]
            raise CorruptDataError(
                f"{self.files.where(index_name(shard))}: the index does not point at the "
                f"member it names in {shard}: the index is damaged or was changed after ingest"
            )
        if array is not None and array.flags.c_contiguous and self.mapped:
            self.arrays[index] = (array.dtype, array.shape, len(payload) - array.nbytes)

    def read(self, index: int) -> bytes | np.ndarray:
        """The member of sample `index`: its bytes, or a raw member's array."""
        offset, size = int(self.offset[index]), int(self.size[index])
        layout = self.arrays.get(index)
        if layout is None:
            return self._pread(index, offset, size)
        dtype, shape, header = layout
        shard = int(self.shard[index])
        mapped = self._files.map(shard, self.paths[shard])
        if offset + size > len(mapped):
            raise DatasetError(f"{self.names[shard]}: the shard is truncated")
        return np.frombuffer(mapped, dtype, math.prod(shape), offset + header).reshape(shape)

    def _pread(self, index: int, offset: int, size: int) -> bytes:
        shard = int(self.shard[index])
        data = self.files.read_range(self.names[shard], offset, size)
        if len(data) != size:
            raise DatasetError(f"{self.names[shard]}: the shard is truncated")
        return data

    def close(self) -> None:
        self._files.close()
