"""Read-only file descriptors opened once per file and shared by a reader's threads,
closed by `close()` or when their owner is dropped (a loader made every epoch and then
forgotten leaks none). They never cross into another process: a copy starts empty."""

from __future__ import annotations

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

    def close(self) -> None:
        """Close every descriptor; a later `fd` opens its file again."""
        with self._lock:
            _close_all(self._fds)

    def __reduce__(self):
        return OpenFiles, ()
