"""A cache folder bounded in bytes, shared by every process that opens it (DataLoader
workers, the ranks of one machine): entries are fetched once, used in place, and evicted
least recently used first (cache_policy).

Coordination is by file locks, which the operating system releases when their holder
dies, so no dead process can hold the cache: one lock guards the bookkeeping for the
moment of a decision, and one lock per entry makes a second process wait for the first
one's fetch of that entry instead of fetching it too. A fetch reserves its size before it
starts; reservations and partial files left by a dead process are removed by the next
scan. An evicted file that a reader still holds open stays readable until it is closed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from medshard.shards.atomic import TMP_MARK, atomic_write_bytes, temporary_path
from medshard.shards.cache_policy import lru_victims

__all__ = ["CacheDir"]

_LOCKS = ".locks"
_RESERVED = ".reserved"


class CacheDir:
    """Entries (files, or folders with `fetch_dir`) under `root` matching the glob patterns
    `evictable`; every other file in it counts against `limit` but stays."""

    def __init__(self, root: Path, limit: int | None, evictable: tuple[str, ...]):
        self.root = Path(root)
        self.limit = limit
        self.evictable = evictable

    def open(
        self, name: str, size: int, fill: Callable[[Path], object], evict: bool = True
    ) -> int | None:
        """A read-only descriptor of file `name`, first written by `fill(path)` when it is
        not cached; None when the bytes being fetched right now leave no room for it (or,
        without `evict`, when it fits only by evicting: a fetch ahead of the plan never
        takes the room of an entry that a reader may be using)."""
        return self._get(name, size, fill, self._open, evict)

    def fetch_dir(
        self, name: str, size: int, fill: Callable[[Path], object], evict: bool = True
    ) -> Path | None:
        """Folder `name`, first made by `fill(path)` when it is not cached; None as `open`."""
        return self._get(name, size, fill, self._folder, evict)

    def put(self, name: str, data: bytes) -> None:
        """Write a small file that stays (the card) in place of the one there."""
        with self._entry_lock(name):
            atomic_write_bytes(self.root / name, data)

    def keep(self, name: str, fill: Callable[[Path], object]) -> None:
        """Write a file that stays (a table) by `fill(path)`, in place of the one there;
        the limit, which must hold it, is checked by the caller."""
        path = self.root / name
        tmp = temporary_path(path)
        with self._entry_lock(name):
            try:
                fill(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

    def drop(self, name: str, intact: Callable[[Path], bool] | None = None) -> None:
        """Remove entry `name`, found damaged, unless `intact(path)` says the one there now
        is whole (another reader fetched it again meanwhile): the next open fetches it."""
        path = self.root / name
        with self._entry_lock(name):
            if intact is None or not path.exists() or not intact(path):
                _remove(path)

    def usage(self) -> int:
        """Bytes in the cache and reserved for fetches under way."""
        return self._scan(skip="")[1]

    def clear(self) -> None:
        """Remove every entry and table (a dataset that was replaced at its URL)."""
        with self._lock():
            for child in self.root.iterdir():
                if child.name not in (_LOCKS, _RESERVED):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()

    def _get(self, name: str, size: int, fill, hit: Callable[[Path], object], evict: bool):
        path = self.root / name
        found = hit(path)
        if found is not None:
            return found
        with self._entry_lock(name):  # another process fetching it: wait for its result
            found = hit(path)
            if found is not None:
                return found
            with self._lock():
                entries, used = self._scan(skip=name)
                victims = lru_victims([(s, t) for _, s, t in entries], used, size, self.limit)
                if victims is None or (victims and not evict):
                    return None
                for index in victims:
                    _remove(self.root / entries[index][0])
                reservation = self._reserve(name, size)
            tmp = temporary_path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fill(tmp)
                # in place and no longer reserved in one step for a scan: one that saw the
                # partial folder, then no reservation, would count the entry nowhere
                with self._lock():
                    os.replace(tmp, path)
                    reservation.unlink()
            finally:
                _remove(tmp)
                reservation.unlink(missing_ok=True)
            return hit(path)

    def _open(self, path: Path) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for the eviction order
        return fd

    def _folder(self, path: Path) -> Path | None:
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def _scan(self, skip: str) -> tuple[list[tuple[str, int, float]], int]:
        """(evictable entries as (name, size, last use) but `skip`, bytes used and reserved);
        what a dead process left half-fetched or reserved is removed on the way."""
        used, sizes = 0, {}
        for folder, dirs, files in os.walk(self.root):
            relative = Path(folder).relative_to(self.root)
            if relative.parts[:1] in ((_LOCKS,), (_RESERVED,)):
                dirs.clear()
                continue
            for child in [d for d in dirs if TMP_MARK in d]:  # its reservation counts
                dirs.remove(child)
                if self._abandoned((relative / child).as_posix()):
                    _remove(Path(folder, child))
            for file in files:
                path = Path(folder, file)
                if TMP_MARK in file:
                    if self._abandoned((relative / file).as_posix()):
                        _remove(path)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    size = path.stat().st_size
                    used += size
                    sizes[(relative / file).as_posix()] = size
        entries = []
        for pattern in self.evictable:
            for path in self.root.glob(pattern):
                name = path.relative_to(self.root).as_posix()
                if name == skip or TMP_MARK in name:
                    continue
                inside = [s for n, s in sizes.items() if n == name or n.startswith(name + "/")]
                with contextlib.suppress(FileNotFoundError):
                    entries.append((name, sum(inside), path.stat().st_mtime))
        return entries, used + self._reserved(tidy=True)

    def fetching(self) -> int:
        """Bytes reserved by the fetches under way, in any process."""
        return self._reserved(tidy=False)

    def _reserved(self, tidy: bool) -> int:
        """Bytes reserved by live fetches; `tidy` (under the cache lock) also removes the
        reservations of dead ones."""
        total, reserved = 0, self.root / _RESERVED
        if not reserved.is_dir():
            return 0
        for mark in reserved.iterdir():
            entry, _, size = mark.name.rpartition(".")
            if not self._abandoned(_unflat(entry)):
                total += int(size)
            elif tidy:
                mark.unlink(missing_ok=True)
        return total

    def _abandoned(self, name: str) -> bool:
        """Whether no process holds the entry lock of `name` (a partial file's or folder's
        name, or an entry's): then nobody is fetching it."""
        from filelock import FileLock, Timeout

        entry = name.split(TMP_MARK)[0]
        lock = FileLock(self._lock_path(entry), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return False
        lock.release()
        return True

    def _reserve(self, name: str, size: int) -> Path:
        mark = self.root / _RESERVED / f"{_flat(name)}.{size}"
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
        return mark

    def _lock_path(self, name: str) -> Path:
        return self.root / _LOCKS / f"{_flat(name)}.lock"

    @contextlib.contextmanager
    def _entry_lock(self, name: str) -> Iterator[None]:
        from filelock import FileLock

        path = self._lock_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path):
            yield

    def _lock(self):
        from filelock import FileLock

        (self.root / _LOCKS).mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / _LOCKS / "cache")


def _flat(name: str) -> str:
    return name.replace("%", "%25").replace("/", "%2F")


def _unflat(flat: str) -> str:
    return flat.replace("%2F", "/").replace("%25", "%")


def _remove(path: Path) -> None:
    """Remove a file, or a folder by first renaming it aside (never seen half removed)."""
    if path.is_dir() and not path.is_symlink():
        aside = temporary_path(path) if TMP_MARK not in path.name else path
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, aside)
            shutil.rmtree(aside, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
