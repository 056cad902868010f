"""The local cache folder of a dataset in object storage: laid out like the dataset
itself, so that every local reader (tar shards, Zarr, tables, DALI) reads it unchanged,
and filled on demand from its URL under a size limit.

The card is fetched at every open (a dataset replaced at its URL clears the cache); the
tables are fetched once and stay; shards, indexes and Zarr sample groups are entries of
the bounded cache (cache.py). Every fetched file is checked against the card: shards by
their sha256 in `card.shards`, indexes, tables and Zarr metadata by `card.checksums`,
single samples read by byte range by the manifest's `sample_sha256` (random_access), and
Zarr chunks by their own crc32c when they are read. The folder names its origin in
`.origin.json`, so any process given the folder reads through the same cache.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from urllib.parse import quote, urlsplit

from medshard.errors import CorruptDataError, DatasetError
from medshard.shards.cache import CacheDir
from medshard.shards.cache_policy import least_limit, prefetch_count, whole_shards
from medshard.shards.card import DatasetCard, ShardInfo, read_card
from medshard.shards.checksums import file_sha256
from medshard.shards.foreground import FOREGROUND_NAME
from medshard.shards.layout import CARD_NAME, MANIFEST_NAME, REJECTED_NAME, WDS_DIR, ZARR_DIR
from medshard.shards.ranges_ahead import RangesAhead
from medshard.shards.storage import S3Store

__all__ = [
    "CACHE_VARIABLE",
    "LIMIT_VARIABLE",
    "ORIGIN_NAME",
    "Mirror",
    "RangesAhead",
    "cache_root",
    "parse_limit",
]

CACHE_VARIABLE = "MEDSHARD_CACHE"
LIMIT_VARIABLE = "MEDSHARD_CACHE_LIMIT"
ORIGIN_NAME = ".origin.json"
TABLES = (MANIFEST_NAME, REJECTED_NAME, FOREGROUND_NAME)
_EVICTABLE = (f"{WDS_DIR}/*.tar", f"{WDS_DIR}/*.idx", f"{ZARR_DIR}/*/")
_log = logging.getLogger(__name__)
AHEAD_BYTES = 256 * 2**20  # byte ranges held in memory ahead of their reads, at most


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where remote datasets are cached: `cache_dir`, else $MEDSHARD_CACHE, else
    ~/.cache/medshard (under $XDG_CACHE_HOME when set)."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medshard"


def parse_limit(value: int | str | None) -> int | None:
    """A cache limit in bytes, from a number or a size such as '20GB' or '512MiB'."""
    if value is None:
        return None
    if isinstance(value, bool):  # an int to Python, never a size
        raise DatasetError(f"cache_limit {value!r} is not a size (write e.g. 20GB)")
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        limit = int(TypeAdapter(ByteSize).validate_python(value))
    except ValidationError:
        raise DatasetError(f"cache_limit {value!r} is not a size (write e.g. 20GB)") from None
    if limit <= 0:
        raise DatasetError(f"cache_limit {value!r} is not a positive size")
    return limit


class Mirror:
    """The cache folder `root` of the dataset at `url`."""

    def __init__(self, root: Path, url: str, endpoint_url: str | None, limit: int | None):
        self.root = Path(root)
        self.store = S3Store(url, endpoint_url)
        self.url = self.store.url
        self.limit = limit
        self.cache = CacheDir(self.root, limit, _EVICTABLE)
        self._whole: dict[str, bool] = {}
        self._damaged: set[str] = set()  # shards whose object fails its checksum
        self._ranges = RangesAhead(AHEAD_BYTES)

    @classmethod
    def open(
        cls,
        url: str | Path,
        *,
        cache_dir: str | Path | None = None,
        cache_limit: int | str | None = None,
        endpoint_url: str | None = None,
    ) -> Mirror:
        """Fetch the card and tables of the dataset at `url` into its cache folder; a
        limit (default: $MEDSHARD_CACHE_LIMIT, else none) that cannot hold the tables and
        the largest entry is refused."""
        store = S3Store(url, endpoint_url)
        host = urlsplit(store.endpoint_url).netloc if store.endpoint_url else "aws"
        name = quote(f"{store.bucket}/{store.prefix}".rstrip("/"), safe="")
        root = cache_root(cache_dir) / "s3" / quote(host, safe="") / name
        if cache_limit is None:
            cache_limit = os.environ.get(LIMIT_VARIABLE) or None
        mirror = cls(root, store.url, store.endpoint_url, parse_limit(cache_limit))
        mirror._refresh()
        return mirror

    @classmethod
    def at(cls, path: str | Path) -> Mirror | None:
        """The mirror whose cache folder is `path`, or None for a dataset on disk."""
        origin = Path(path) / ORIGIN_NAME
        if not origin.is_file():
            return None
        about = json.loads(origin.read_text())
        return cls(Path(path), about["url"], about["endpoint_url"], about["cache_limit"])

    @cached_property
    def card(self) -> DatasetCard:
        return read_card(self.root)

    @cached_property
    def pinned(self) -> int:
        """Bytes of the files that stay: the card and the tables."""
        names = (CARD_NAME, *TABLES)
        return sum((self.root / n).stat().st_size for n in names if (self.root / n).is_file())

    @cached_property
    def _shards(self) -> dict[str, ShardInfo]:
        return {shard.path: shard for shard in self.card.shards}

    def named(self, text: str) -> str:
        """A message about a file of the cache folder, naming the object at its URL."""
        return text.replace(str(self.root), self.url)

    def read(self, shard: str, offset: int, nbytes: int) -> bytes:
        """`nbytes` of a shard from `offset`: from the whole shard in the cache when its
        split fits there (and its object matches the card), else by one ranged request."""
        info = self.shard(shard)
        if self.in_files(shard):
            fd = self._whole_or_none(info)
            if fd is not None:
                try:
                    return os.pread(fd, nbytes, offset)
                finally:
                    os.close(fd)
        held = self._ranges.take((shard, offset, nbytes))
        if held is not None:
            return held
        return self.store.get_range(shard, offset, nbytes)

    def _whole_or_none(self, info: ShardInfo) -> int | None:
        """A descriptor of the whole shard in the cache (fetched when it is not there), or
        None: no room, or the object differs from the card. Then its samples are read by
        range, each checked on its own, so that one damaged sample costs only itself."""
        try:
            return self.cache.open(info.path, info.bytes, self._filler(info.path, info.sha256))
        except CorruptDataError as exc:
            self._damaged.add(info.path)
            _log.warning("%s; its samples are read one by one, each checked", exc)
            return None

    def read_again(self, shard: str, offset: int, nbytes: int) -> bytes:
        """`read` once more, for bytes that failed their checksum: the shard's copy in the
        cache (damaged on local disk) is dropped first, so that they come from the store."""
        sha256 = self.shard(shard).sha256
        self.cache.drop(shard, lambda path: sha256 is not None and file_sha256(path) == sha256)
        return self.read(shard, offset, nbytes)

    def shard(self, name: str) -> ShardInfo:
        info = self._shards.get(name)
        if info is None:
            raise DatasetError(f"{self.store.object_url(name)}: the card lists no such shard")
        return info

    def in_files(self, shard: str) -> bool:
        """Whether `shard`'s bytes are read from a whole copy in the cache (else by range,
        each read checked on its own)."""
        return self.whole(self.shard(shard).split) and shard not in self._damaged

    def whole(self, split: str) -> bool:
        """Whether the shards of `split` are fetched whole (cache_policy.whole_shards)."""
        if split not in self._whole:
            size = sum(s.bytes for s in self.card.shards if s.split == split)
            self._whole[split] = whole_shards(size, self.pinned, self.limit)
        return self._whole[split]

    def read_by_windows(self, split: str, shards: int) -> bool:
        """A plan reads `split` `shards` shards at a time (a shuffle by shards, or one
        shard after another): its shards are fetched whole, the least recently used out,
        when the cache holds one more than that of its largest shards beside the tables
        (the next one fetched while a window is read), even if the split does not fit.
        Returns whether they are."""
        largest = max((s.bytes for s in self.card.shards if s.split == split), default=0)
        if whole_shards((shards + 1) * largest, self.pinned, self.limit):
            self._whole[split] = True
        return self.whole(split)

    def open_file(self, name: str, size: int, sha256: str | None) -> int:
        """A descriptor of a whole file (shard, index) in the cache, fetched when it is not
        there; it stays readable while open, even if evicted."""
        return self._wait(lambda: self.cache.open(name, size, self._filler(name, sha256)), name)

    def local_file(self, name: str, size: int, sha256: str | None) -> Path:
        """A whole file (shard, index) in the cache, fetched when it is not there."""
        os.close(self.open_file(name, size, sha256))
        return self.root / name

    def group(self, zarr_path: str, nbytes: int, ahead: bool = False) -> Path | None:
        """The folder of one Zarr sample in the cache, fetched whole when it is not there;
        its metadata checked against the card. `ahead` of the plan: only into free room,
        never evicting nor waiting (None when there is none)."""
        checksums = self.card.checksums or {}

        def fill(tmp: Path) -> None:
            listing = self.store.list(zarr_path + "/")
            if not listing:
                raise DatasetError(
                    f"{self.store.object_url(zarr_path)}: the sample's arrays are missing"
                )
            for name in sorted(listing):
                dest = tmp / name[len(zarr_path) + 1 :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.store.download(name, dest, checksums.get(name))

        if ahead:
            return self.cache.fetch_dir(zarr_path, nbytes, fill, evict=False)
        return self._wait(lambda: self.cache.fetch_dir(zarr_path, nbytes, fill), zarr_path)

    def prefetch(self, rows: Iterable[dict], threads: int = 4, ahead: bool = False) -> int:
        """Fetch what the manifest rows will read, in order, as far as half the cache
        holds: their Zarr groups, and their shards where a split is read whole. `ahead` of
        the plan: nothing when the first entry does not fit in that half, and only into
        free room (never evicting what a reader may be using); and the byte ranges of
        samples of a split read by range, into memory (RangesAhead), where `read` takes
        them. Returns how many entries and ranges were fetched or found."""
        wanted: dict[str, tuple[int, Callable[[str, int, bool], Path | None]]] = {}
        ranges: list[tuple[str, int, int]] = []
        for row in rows:
            if row.get("zarr_path"):
                wanted.setdefault(row["zarr_path"], (row["bytes"], self.group))
            elif (
                row.get("shard")
                and self.whole(self.shard(row["shard"]).split)
                and row["shard"] not in self._damaged
            ):
                info = self.shard(row["shard"])
                wanted.setdefault(info.path, (info.bytes, self._whole_shard))
            elif row.get("shard") and ahead:
                ranges.append((row["shard"], row["offset"], row["bytes"]))
        sizes = [size for size, _ in wanted.values()]
        budget = (self.limit - self.pinned) // 2 if self.limit else sum(sizes)
        count = prefetch_count(sizes, budget, at_least_one=not ahead)
        chosen = list(wanted.items())[:count]

        def fetch(item: tuple[str, tuple[int, Callable[[str, int, bool], Path | None]]]):
            name, (size, get) = item
            return get(name, size, ahead)

        def fetch_range(span: tuple[str, int, int]) -> bool:
            return span in self._ranges or self._ranges.put(span, self.store.get_range(*span))

        if len(chosen) + len(ranges) <= 1:  # one sample's read: no pool to start and stop
            return sum(fetch(item) is not None for item in chosen) + sum(map(fetch_range, ranges))
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            found = sum(found is not None for found in pool.map(fetch, chosen))
            return found + sum(pool.map(fetch_range, ranges))

    def _whole_shard(self, name: str, size: int, ahead: bool = False) -> Path | None:
        sha256 = self.shard(name).sha256
        if not ahead:
            return self.local_file(name, size, sha256)
        fd = self.cache.open(name, size, self._filler(name, sha256), evict=False)
        if fd is None:
            return None
        os.close(fd)
        return self.root / name

    def _filler(self, name: str, sha256: str | None):
        return lambda tmp: self.store.download(name, tmp, sha256)

    def _wait(self, get, name: str):
        """`get()` until the cache has room: for as long as fetches under way hold the
        room (each of them ends, fetched or failed, within the store's retries), then
        refused when what stays in the cache leaves none."""
        patience, pause = iter(self.store.retry.delays()), 0.05
        while True:
            found = get()
            if found is not None:
                return found
            if self.cache.fetching():
                pause = min(2 * pause, 2.0)
                time.sleep(pause)
                continue
            delay = next(patience, None)  # a fetch may have just ended: look again
            if delay is None:
                break
            time.sleep(delay)
        raise DatasetError(
            f"{self.store.object_url(name)}: the cache of {self.url} has no room for it: "
            "files that are not its entries fill the cache_limit; give a larger cache_limit"
        )

    def _refresh(self) -> None:
        """The card as it is now at the URL (the cache cleared when it changed), the
        tables, the origin; then the limit checked: a refused limit leaves behind none of
        the files this open wrote."""
        if not self.store.exists(CARD_NAME):
            raise DatasetError(f"{self.url}: not a medshard dataset (no {CARD_NAME})")
        data = self.store.get(CARD_NAME)
        card_path = self.root / CARD_NAME
        if card_path.is_file() and card_path.read_bytes() != data:
            self.cache.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        written = []
        if not card_path.is_file():
            self.cache.put(CARD_NAME, data)
            written.append(CARD_NAME)
        try:
            card = self.card
        except DatasetError as exc:
            raise type(exc)(self.named(str(exc))) from exc
        checksums = card.checksums
        for name in TABLES:
            expected = (checksums or {}).get(name)
            if checksums is not None and expected is None:
                continue
            if checksums is None and name != MANIFEST_NAME and not self.store.exists(name):
                continue
            if self._table(name, expected):
                written.append(name)
        try:
            self._check_limit()
        except DatasetError:
            for name in written:
                self.cache.drop(name)
            raise
        origin = {"url": self.url, "endpoint_url": self.store.endpoint_url}
        origin["cache_limit"] = self.limit
        self.cache.put(ORIGIN_NAME, json.dumps(origin).encode())

    def _table(self, name: str, sha256: str | None) -> bool:
        """Fetch a table unless the cache holds it as the card has it; whether it did."""
        path = self.root / name
        if path.is_file() and (sha256 is None or file_sha256(path) == sha256):
            return False
        self.cache.keep(name, self._filler(name, sha256))
        return True

    def _check_limit(self) -> None:
        """Refuse a limit that cannot hold the tables beside the largest entry."""
        if self.limit is None:
            return
        from rich.filesize import decimal

        from medshard.shards.manifest import read_manifest

        entries = [(s.bytes, f"shard {s.path}") for s in self.card.shards]
        rows = read_manifest(self.root).select(["key", "zarr_path", "bytes"]).to_pylist()
        entries += [
            (r["bytes"], f"the arrays of sample {r['key']!r}") for r in rows if r["zarr_path"]
        ]
        if not entries:
            return
        largest, what = max(entries, key=lambda e: e[0])
        need = least_limit(self.pinned, largest)
        if self.limit < need:
            raise DatasetError(
                f"{self.url}: a cache_limit of {decimal(self.limit)} cannot hold {what} "
                f"({decimal(largest)}) beside the dataset's tables ({decimal(self.pinned)}); "
                f"give a cache_limit of at least {decimal(need)}"
            )
