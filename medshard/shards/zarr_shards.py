"""The shard files of the Zarr store, written and read without a second copy.

A sample's array is one shard in the Zarr v3 `sharding_indexed` format: inner chunks in
C order, each its little-endian bytes, optionally Blosc-compressed, then a crc32c; the
index (offset, length per chunk, then its own crc32c) at the end. zarr-python and
tensorstore read these files; they are written here because zarr-python's sharded
writes cost more than decoding the NIfTI they come from.

`RegionReader` copies a region straight from the page cache into the caller's array
(a batch slot, possibly a flipped or turned view of it): uncompressed chunks through a
memory map, each chunk's crc32c checked on its first read by this reader; compressed
chunks decoded one at a time, checked on every read. Other layouts go through
tensorstore. Mapped pages are handed back to the page cache every `map_budget` bytes,
so the reader's resident memory does not grow with the dataset."""

from __future__ import annotations

import itertools
import json
import mmap
import threading
from collections import OrderedDict
from pathlib import Path

import google_crc32c
import numpy as np

from medshard.errors import CorruptDataError
from medshard.shards.card import read_card
from medshard.shards.checksums import check_file
from medshard.shards.layout import CARD_NAME
from medshard.shards.zarr_layout import Codec, inner_codecs

__all__ = ["RegionReader", "write_shard"]

_UNOPENED = object()  # an array not opened yet (None: one this reader cannot read)

_EMPTY = 2**64 - 1  # the index's offset and length of a chunk that was never written
_MAX_MAPS = 512
_MAX_ARRAYS = 4096  # parsed metadata kept, so memory does not grow with the dataset


def _crc(data: np.ndarray) -> bytes:
    return np.uint32(google_crc32c.value(data)).tobytes()


def write_shard(path: str | Path, array: np.ndarray, chunks: tuple[int, ...], codec: Codec) -> int:
    """Write one shard holding all of `array` (its shape rounded up to whole chunks, edge
    chunks padded with the fill value 0), with `codec` and crc32c, chunk by chunk straight
    to the file; returns its size."""
    compressor = None
    if codec != "none":
        from numcodecs import Blosc

        config = inner_codecs(codec, array.dtype)[0].to_dict()["configuration"]
        shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE}.get(
            config["shuffle"], Blosc.BITSHUFFLE
        )
        compressor = Blosc(cname=config["cname"], clevel=config["clevel"], shuffle=shuffle)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    grid = [-(-d // c) for d, c in zip(array.shape, chunks)]
    index, offset = np.empty((int(np.prod(grid)), 2), "<u8"), 0
    buffer = np.zeros(chunks, little.dtype)
    with open(path, "wb") as handle:
        for number, coords in enumerate(itertools.product(*(range(g) for g in grid))):
            region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, chunks))
            piece = little[region]
            if piece.shape != tuple(chunks):
                buffer[...] = 0
                buffer[tuple(slice(0, s) for s in piece.shape)] = piece
                piece = buffer
            data = np.ascontiguousarray(piece).view(np.uint8).reshape(-1)
            if compressor is not None:
                data = np.frombuffer(compressor.encode(data.view(little.dtype)), np.uint8)
            handle.write(data)
            handle.write(_crc(data))
            index[number] = (offset, data.size + 4)
            offset += data.size + 4
        index_bytes = index.view(np.uint8).reshape(-1)
        handle.write(index_bytes)
        handle.write(_crc(index_bytes))
    return offset + index_bytes.size + 4


_FAULT_AROUND = 64 * 1024  # Linux maps this much of a file around each page fault


def _mapped_bytes(inside: list[slice], chunks: tuple[int, ...], itemsize: int) -> int:
    """What reading `inside` of a memory-mapped chunk maps: each of its planes spans its
    rows at the chunk's row stride, and the kernel maps whole 64 KB runs around faults."""
    sizes = [s.stop - s.start for s in inside]
    if len(sizes) < 2:
        return sizes[0] * itemsize + _FAULT_AROUND if sizes else 0
    row = chunks[-1] * itemsize
    plane = (sizes[-2] - 1) * row + sizes[-1] * itemsize + _FAULT_AROUND
    return int(np.prod(sizes[:-2])) * plane


class _Unsupported(Exception):
    """A layout this module does not read in place (tensorstore reads it instead)."""


class _Shard:
    """One memory-mapped shard file and its checked index."""

    def __init__(self, path: Path, grid: tuple[int, ...]):
        self.path = path
        with open(path, "rb") as handle:
            self.map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        size = int(np.prod(grid)) * 16
        if len(self.map) < size + 4:
            raise CorruptDataError(f"{path}: the shard file is truncated")
        raw = np.frombuffer(self.map, np.uint8, size + 4, len(self.map) - size - 4)
        if _crc(raw[:size]) != raw[size:].tobytes():
            raise CorruptDataError(f"{path}: the shard index is damaged (crc32c mismatch)")
        self.index = raw[:size].view("<u8").reshape(*grid, 2).copy()
        self.checked = np.zeros(grid, bool)


class _Array:
    """A sharded array's metadata and its open shards."""

    def __init__(self, path: Path):
        meta = json.loads((path / "zarr.json").read_text())
        codecs = meta.get("codecs", [])
        if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
            raise _Unsupported
        config = codecs[0]["configuration"]
        names = [c["name"] for c in config["codecs"]]
        endian = config["codecs"][0].get("configuration", {}).get("endian", "little")
        if names not in (["bytes", "crc32c"], ["bytes", "blosc", "crc32c"]) or endian != "little":
            raise _Unsupported
        if [c["name"] for c in config["index_codecs"]] != ["bytes", "crc32c"]:
            raise _Unsupported
        if config.get("index_location", "end") != "end":
            raise _Unsupported
        self.path = path
        self.shape = tuple(meta["shape"])
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        self.chunks = tuple(config["chunk_shape"])
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        self.grid = tuple(s // c for s, c in zip(shard, self.chunks))
        try:
            self.fill = np.array(meta["fill_value"], self.dtype)
        except (TypeError, ValueError):  # a fill value spelled as raw bits
            raise _Unsupported from None
        self.compressed = "blosc" in names
        self.attributes = meta.get("attributes", {}).get("medshard", {})
        self.size = int(np.prod(self.chunks)) * self.dtype.itemsize

    def shard_path(self, coords: tuple[int, ...]) -> Path:
        return self.path.joinpath("c", *(str(c) for c in coords))


class RegionReader:
    """One-copy region reads of the sharded arrays under a dataset folder; one per
    process, shared by its threads."""

    def __init__(self, root: str | Path, map_budget: int = 128 * 2**20):
        self.root = Path(root)
        self.map_budget = map_budget
        self._arrays: OrderedDict[str, _Array | None] = OrderedDict()
        self._shards: OrderedDict[tuple, _Shard | None] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._mapped = 0
        self._fallback = None
        self._checksums: dict[str, str] | None = None  # the card's, read once

    def attributes(self, path: str) -> dict:
        """The array's `medshard` attributes (its checksum, stored intensity scale)."""
        array = self._array(path)
        if array is not None:
            return array.attributes
        return json.loads((self.root / path / "zarr.json").read_text())["attributes"].get(
            "medshard", {}
        )

    def dtype(self, path: str) -> np.dtype:
        """The stored data type of the array at `path`."""
        array = self._array(path)
        if array is not None:
            return array.dtype
        return np.dtype(json.loads((self.root / path / "zarr.json").read_text())["data_type"])

    def read_into(self, path: str, out: np.ndarray, region: tuple[slice, ...]) -> None:
        """Copy `region` (slices inside the array) of the array at `path` into `out`,
        converting to its dtype; a damaged chunk raises CorruptDataError."""
        array = self._array(path)
        if array is None:
            out[...] = self._tensorstore().read(path, region)
            return
        bounds = [(s.start, s.stop) for s in region]
        spans = [range(lo // c, -(-hi // c)) for (lo, hi), c in zip(bounds, array.chunks)]
        for coords in itertools.product(*spans):
            inside, target = [], []
            for i, (lo, hi), c in zip(coords, bounds, array.chunks):
                start, stop = max(lo, i * c), min(hi, (i + 1) * c)
                inside.append(slice(start - i * c, stop - i * c))
                target.append(slice(start - lo, stop - lo))
            chunk = self._chunk(array, coords)
            if chunk is None:
                out[tuple(target)] = array.fill
                continue
            out[tuple(target)] = chunk[tuple(inside)]
            if not array.compressed:
                self._mapped += _mapped_bytes(inside, array.chunks, array.dtype.itemsize)
        if self._mapped > self.map_budget:
            self.release()

    def release(self) -> None:
        """Hand every mapped page back to the page cache (the data stays cached there)."""
        self._mapped = 0
        with self._lock:
            shards = [s for s in self._shards.values() if s is not None]
        for shard in shards:
            shard.map.madvise(mmap.MADV_DONTNEED)

    def forget(self, group: str) -> None:
        """Let go of what this reader holds of the arrays under folder `group` (a sample's,
        replaced on disk): the next read opens and checks the files there now."""
        folder = self.root / group
        with self._lock:
            for path in [p for p in self._arrays if Path(p).is_relative_to(group)]:
                del self._arrays[path]
            for key in [k for k in self._shards if k[0].is_relative_to(folder)]:
                del self._shards[key]  # its map closes once no read still uses it
        if self._fallback is not None:
            self._fallback.forget(group)

    def _array(self, path: str) -> _Array | None:
        found = self._arrays.get(path, _UNOPENED)  # one lookup: others evict and forget
        if found is not _UNOPENED:
            return found
        self._check_metadata(path)
        try:
            array = _Array(self.root / path)
        except _Unsupported:
            array = None
        with self._lock:
            self._arrays[path] = array
            while len(self._arrays) > _MAX_ARRAYS:
                self._arrays.popitem(last=False)
        return array

    def _check_metadata(self, path: str) -> None:
        """The array's zarr.json against the card's checksum, once per array and process:
        an edited data type or shape would otherwise serve wrong voxels without a word."""
        if self._checksums is None:  # a bare Zarr store (no card) has nothing to check against
            card = (self.root / CARD_NAME).is_file()
            self._checksums = (read_card(self.root).checksums or {}) if card else {}
        name = f"{path}/zarr.json"
        check_file(self.root, name, self._checksums.get(name))

    def _tensorstore(self):
        if self._fallback is None:
            from medshard.shards.zarr_store import ZarrReader

            self._fallback = ZarrReader(self.root)
        return self._fallback

    def _shard(self, array: _Array, coords: tuple[int, ...]) -> _Shard | None:
        key = (array.path, coords)
        with self._lock:
            if key in self._shards:
                self._shards.move_to_end(key)
                return self._shards[key]
        path = array.shard_path(coords)
        # medshard writes every shard, even one of fill values only: one that is not
        # there was lost (or evicted from a remote dataset's cache), never zeros to serve
        written_whole = self._checksums is not None and (self.root / CARD_NAME).is_file()
        shard = _Shard(path, array.grid) if written_whole or path.exists() else None
        with self._lock:
            self._shards[key] = shard
            while len(self._shards) > _MAX_MAPS:
                self._shards.popitem(last=False)
        return shard

    def _chunk(self, array: _Array, coords: tuple[int, ...]) -> np.ndarray | None:
        """The chunk at `coords` as an array of the chunk shape, or None (fill value)."""
        shard = self._shard(array, tuple(c // g for c, g in zip(coords, array.grid)))
        if shard is None:
            return None
        local = tuple(c % g for c, g in zip(coords, array.grid))
        offset, length = shard.index[local].tolist()
        if offset == _EMPTY:
            return None
        where = shard.path
        if length < 4 or offset + length > len(shard.map):
            raise CorruptDataError(f"{where}: chunk {coords} lies outside the shard file")
        data = np.frombuffer(shard.map, np.uint8, length - 4, offset)
        checked = shard.checked[local]
        if not checked and _crc(data) != shard.map[offset + length - 4 : offset + length]:
            raise CorruptDataError(
                f"{where}: chunk {coords} is damaged or was changed after ingest (crc32c mismatch)"
            )
        if not array.compressed:
            if data.size != array.size:
                raise CorruptDataError(f"{where}: chunk {coords} has the wrong length")
            if not checked:  # the check mapped the whole chunk: it counts toward the budget
                shard.checked[local] = True
                self._mapped += length
            return data.view(array.dtype).reshape(array.chunks)
        return self._decode(array, data, where, coords)

    def _decode(self, array: _Array, data: np.ndarray, where: Path, coords) -> np.ndarray:
        from numcodecs import blosc

        scratch = getattr(self._local, "scratch", None)
        if scratch is None or scratch.nbytes < array.size:
            scratch = self._local.scratch = np.empty(array.size, np.uint8)
        out = scratch[: array.size]
        try:
            blosc.decompress(data, out)
        except Exception as exc:  # blosc raises RuntimeError or ValueError for bad frames
            raise CorruptDataError(f"{where}: chunk {coords} does not decode ({exc})") from exc
        return out.view(array.dtype).reshape(array.chunks)

    def __getstate__(self):  # maps and locks do not cross into other processes
        return {"root": self.root, "map_budget": self.map_budget}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["map_budget"])
