"""Read-only file descriptors (and memory maps) opened once per file and shared by a
reader's threads, closed by `close()` or when their owner is dropped (a loader made every
epoch and then forgotten leaks none). They never cross into another process: a copy
starts empty.

A map stays valid while any array viewing it is alive, after `close()` too. Only files
that medshard never changes in place are mapped: a dataset is replaced by a rename, which
leaves a mapped file whole; a file cut short under a map would stop the process. Mapped
pages are the page cache's own, clean and file-backed: the process's resident size counts
those it touched, and the kernel takes them back under memory pressure (the Zarr reader,
whose chunks are far larger, also hands its pages back itself: zarr_shards.py)."""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from pathlib import Path

__all__ = ["OpenFiles"]


def _close_all(fds: dict) -> None:
    for fd in fds.values():
        os.close(fd)
    fds.clear()


class OpenFiles:
    """A reader's descriptors, one per key, opened on first use by any of its threads."""

    def __init__(self):
        self._fds: dict[object, int] = {}
        self._maps: dict[object, mmap.mmap] = {}
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._fds)

    def fd(self, key: object, path: str | Path) -> int:
        """The descriptor of `path`, opened on first use under `key`."""
        fd = self._fds.get(key)
        if fd is None:
            with self._lock:  # threads may race to open it
                fd = self._fds.get(key)
                if fd is None:
                    fd = self._fds[key] = os.open(path, os.O_RDONLY)
        return fd

    def map(self, key: object, path: str | Path) -> mmap.mmap:
        """A read-only map of the whole of `path`, made on first use under `key`."""
        mapped = self._maps.get(key)
        if mapped is None:
            fd = self.fd(key, path)
            with self._lock:
                mapped = self._maps.get(key)
                if mapped is None:
                    mapped = self._maps[key] = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        return mapped

    def forget(self, key: object) -> None:
        """Close `key`'s descriptor and drop its map (arrays viewing it keep it alive); a
        later `fd` or `map` opens its file again."""
        with self._lock:
            self._maps.pop(key, None)
            fd = self._fds.pop(key, None)
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        """Close every descriptor and drop every map; a later `fd` or `map` opens its
        file again."""
        with self._lock:
            _close_all(self._fds)
            self._maps.clear()

    def __reduce__(self):
        return OpenFiles, ()
