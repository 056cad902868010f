"""Read one member of a sample, not the whole sample. A sample's first read takes its
whole bytes, checks them against the manifest's checksum and notes where each member's
payload lies among them (its tar header says); later reads take exactly the pixel
member's bytes (through the cache of a dataset at a URL), so a loader of training copies
skips the original's bytes and the parsing of tar headers. A shard file that changed
since (another file, size, modification or status change time; in a cache, another file)
is forgotten at the start of the next pass, and its samples are read whole and checked
again. On disk a raw (`.npy`) member is then not read at all: it is a read-only view of
the shard's memory map past its header (its type and shape are kept), so that its pixels
are copied once, from the page cache straight into the batch; in the cache of a dataset
at a URL, where a shard may be evicted, it is read as bytes like any member."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from medshard.errors import DatasetError
from medshard.shards.open_files import OpenFiles
from medshard.shards.random_access import ShardFiles

__all__ = ["MemberRanges"]


def _stamp(path: Path, times: bool) -> tuple[int, ...]:
    """What changes when a file is replaced, and with `times` when it is written (the
    status change time too, which no one sets by hand); () when it is gone. A cache's
    files have their times touched at each use: there a new file is what counts."""
    try:
        info = os.stat(path)
    except OSError:
        return ()
    if not times:
        return info.st_ino, info.st_size
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


class MemberRanges:
    """Where the pixel member of each of `rows` (manifest rows, in the loader's order)
    lies in the shards that `files` reads, once a checked read has shown it (`learn`)."""

    def __init__(self, files: ShardFiles, rows: list[dict]):
        self.files, self.rows = files, rows
        self.mapped = files.mirror is None  # raw members as views of a map of the shard
        self.spans: dict[int, tuple[str, int, int]] = {}  # (field, offset in shard, size)
        self._paths: dict[str, Path] = {}  # by shard: made once (pathlib costs a small read)
        self._stamps: dict[str, tuple[int, ...]] = {}  # each shard's file as first read
        # raw members' (type, shape, header bytes)
        self.arrays: dict[int, tuple[np.dtype, tuple[int, ...], int]] = {}
        self._files = OpenFiles()

    def learn(
        self, index: int, field: str, start: int, size: int, array: np.ndarray | None = None
    ) -> None:
        """Sample `index`'s member `field` lies `start` bytes into its checked sample, `size`
        bytes long; for a raw member, keep the `array`'s layout to skip its header."""
        shard = self.rows[index]["shard"]
        self.spans[index] = (field, int(self.rows[index]["offset"]) + start, size)
        if shard not in self._paths:
            self._paths[shard] = self.files.dataset / shard
            self._stamps[shard] = _stamp(self._paths[shard], self.mapped)
        if array is not None and array.flags.c_contiguous and self.mapped:
            self.arrays[index] = (array.dtype, array.shape, size - array.nbytes)

    def field(self, index: int) -> str | None:
        """The member field learnt for sample `index` (None: not read yet)."""
        span = self.spans.get(index)
        return None if span is None else span[0]

    def read(self, index: int) -> bytes | np.ndarray:
        """The member of sample `index` (learnt): its bytes, or a raw member's array."""
        _, offset, size = self.spans[index]
        shard = self.rows[index]["shard"]
        layout = self.arrays.get(index)
        if layout is None:
            data = self.files.read_range(shard, offset, size)
            if len(data) != size:
                raise self._truncated(index)
            return data
        dtype, shape, header = layout
        try:
            mapped = self._files.map(shard, self._paths[shard])
        except OSError as exc:
            raise DatasetError(
                f"{self.files.where(shard)}: cannot open the shard ({exc.strerror})"
            ) from exc
        if offset + size > len(mapped):
            raise self._truncated(index)
        return np.frombuffer(mapped, dtype, math.prod(shape), offset + header).reshape(shape)

    def forget_changed(self) -> None:
        """Forget what was learnt of each shard whose file changed (or went) since."""
        changed = {
            shard
            for shard, stamp in self._stamps.items()
            if _stamp(self._paths[shard], self.mapped) != stamp
        }
        if not changed:
            return
        for index in [i for i in self.spans if self.rows[i]["shard"] in changed]:
            del self.spans[index]
            self.arrays.pop(index, None)
        for shard in changed:
            del self._stamps[shard], self._paths[shard]
            self._files.forget(shard)
            self.files.forget(shard)

    def _truncated(self, index: int) -> DatasetError:
        row = self.rows[index]
        return DatasetError(
            f"{self.files.where(row['shard'])}: sample {row['key']!r}: the shard is truncated "
            "(changed after this loader read it)"
        )

    def close(self) -> None:
        self._files.close()
