"""Write one WebDataset shard and its DALI index (`wds2idx` format v1.2) in a single pass."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from medshard.shards.atomic import atomic_write_bytes, temporary_path
from medshard.shards.layout import FIXED_MTIME, index_name, is_valid_key, member_name

__all__ = ["MAX_KEY_LENGTH", "SampleLocation", "ShardSummary", "TarShardWriter"]

# Member names must fit a plain ustar header (100 bytes) so that every tar reader,
# DALI's included, sees the same offsets; a field name never needs more than 19.
MAX_KEY_LENGTH = 80
_BLOCK = tarfile.BLOCKSIZE
_DALI_INDEX_VERSION = "v1.2"


@dataclass(frozen=True)
class SampleLocation:
    offset: int  # byte offset of the sample's first member header
    bytes: int  # bytes the sample's members span, headers and padding included
    sha256: str  # of those bytes: what a random-access read checks


@dataclass(frozen=True)
class ShardSummary:
    path: str
    samples: int
    bytes: int
    sha256: str


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it, as a whole and
    since the last `start_sample`."""

    def __init__(self, raw):
        self._raw = raw
        self._sha = hashlib.sha256()
        self.sample_sha = hashlib.sha256()
        self.position = 0

    def start_sample(self) -> None:
        self.sample_sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._raw.write(data)
        self._sha.update(data)
        self.sample_sha.update(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class TarShardWriter:
    """Append samples to a shard; the .tar and .idx appear under their names only on close."""

    def __init__(self, dataset_dir: str | Path, relative_path: str):
        self.relative_path = relative_path
        self._dataset = Path(dataset_dir)
        self._final = self._dataset / relative_path
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_path(self._final)
        self._raw = open(self._tmp, "wb")  # noqa: SIM115 (closed by close() or abort())
        self._file = _HashingFile(self._raw)
        self._tar = tarfile.open(  # noqa: SIM115 (closed by close())
            fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT
        )
        self._index_lines: list[str] = []
        self._closed = False

    def add(self, key: str, members: list[tuple[str, bytes]]) -> SampleLocation:
        """Write one sample: `members` is [(field, payload)], e.g. [('image.png', b'...')]."""
        if not is_valid_key(key) or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"invalid sample key {key!r}")
        start = self._file.position
        self._file.start_sample()
        entries = []
        for field, payload in members:
            name = member_name(key, field)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mtime = FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            header_at = self._file.position
            self._tar.addfile(info, io.BytesIO(payload))
            data_at = header_at + _BLOCK
            padded = -(-len(payload) // _BLOCK) * _BLOCK
            if self._file.position != data_at + padded:  # ustar headers are one block
                raise RuntimeError(f"unexpected tar header size for {name}")
            entries.append(f"{field} {data_at} {len(payload)} {name}")
        self._index_lines.append(" ".join(entries))
        return SampleLocation(
            offset=start,
            bytes=self._file.position - start,
            sha256=self._file.sample_sha.hexdigest(),
        )

    def close(self) -> ShardSummary:
        """Finish the tar, then write the index, then publish both."""
        self._tar.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        index = f"{_DALI_INDEX_VERSION} {len(self._index_lines)}\n" + "".join(
            line + "\n" for line in self._index_lines
        )
        atomic_write_bytes(self._dataset / index_name(self.relative_path), index.encode())
        os.replace(self._tmp, self._final)
        self._closed = True
        return ShardSummary(
            path=self.relative_path,
            samples=len(self._index_lines),
            bytes=self._file.position,
            sha256=self._file.hexdigest(),
        )

    def abort(self) -> None:
        """Drop everything written so far."""
        if not self._closed:
            self._raw.close()
            self._tmp.unlink(missing_ok=True)
            self._closed = True

    def __enter__(self) -> TarShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()
