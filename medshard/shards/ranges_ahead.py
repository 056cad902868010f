"""Byte ranges of shards fetched ahead of their reads and held in memory: where a split
is read by range, a remote dataset's mirror (mirror.py) takes a sample's range from here
when a fetch ahead of the plan brought it, instead of requesting it again."""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["RangesAhead"]


class RangesAhead:
    """Byte ranges of shards fetched ahead of their reads, held in memory until `take`n
    once; at most `limit` bytes, the oldest dropped first (a range whose read came first
    and fetched it itself is never taken). Nothing of it crosses into another process."""

    def __init__(self, limit: int):
        self.limit = limit
        self._held: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __contains__(self, span: tuple[str, int, int]) -> bool:
        return span in self._held

    def put(self, span: tuple[str, int, int], data: bytes) -> bool:
        """Hold `data` for `span`; False when it alone is larger than the limit."""
        if len(data) > self.limit:
            return False
        with self._lock:
            while self._held and self._bytes + len(data) > self.limit:
                self._bytes -= len(self._held.popitem(last=False)[1])
            old = self._held.pop(span, None)
            self._bytes += len(data) - (len(old) if old is not None else 0)
            self._held[span] = data
        return True

    def take(self, span: tuple[str, int, int]) -> bytes | None:
        with self._lock:
            data = self._held.pop(span, None)
            if data is not None:
                self._bytes -= len(data)
        return data

    def __getstate__(self) -> dict:
        return {"limit": self.limit}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limit"])
