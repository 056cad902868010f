"""How a bounded cache of a remote dataset decides: pure functions of sizes and times.

The cache holds whole files (shards, indexes) and whole Zarr sample groups, and the
dataset's tables, which stay. Its limit must hold the tables and the largest entry:
a smaller one is refused when the dataset is opened, never found out by waiting (MosaicML
Streaming waits forever when a shard does not fit). Room is made by evicting the least
recently used entries; bytes still being fetched are never evicted, and when they hold
the room a new entry needs, the caller reads around the cache instead of waiting.
A split is read as whole shards when all of them fit in the cache at once (each shard is
fetched once, and later epochs read locally); otherwise a shuffled epoch would fetch
every shard again and again, so each sample's own byte range is fetched instead.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["least_limit", "lru_victims", "prefetch_count", "whole_shards"]


def least_limit(pinned: int, largest_entry: int) -> int:
    """The smallest cache limit that can hold the tables and any one entry."""
    return pinned + largest_entry


def lru_victims(
    entries: Sequence[tuple[int, float]], used: int, incoming: int, limit: int | None
) -> list[int] | None:
    """Which entries, given as (size, last use), to evict so that `incoming` more bytes
    fit: indices, least recently used first, as few as needed; None when even evicting
    every entry leaves too little room (the rest of `used` is not evictable)."""
    if limit is None or used + incoming <= limit:
        return []
    order = sorted(range(len(entries)), key=lambda i: (entries[i][1], i))
    victims, freed = [], 0
    for index in order:
        if used - freed + incoming <= limit:
            break
        victims.append(index)
        freed += entries[index][0]
    return victims if used - freed + incoming <= limit else None


def whole_shards(split_bytes: int, pinned: int, limit: int | None) -> bool:
    """Whether a split is read as whole shards: it fits in the cache beside the tables."""
    return limit is None or pinned + split_bytes <= limit


def prefetch_count(sizes: Sequence[int], budget: int, at_least_one: bool = True) -> int:
    """How many of the next entries (their sizes, in plan order) to fetch ahead: as many
    as fit in `budget`, and at least one where `at_least_one` (a read that needs it now,
    so that a plan always moves; a fetch ahead of the plan fetches only what fits)."""
    total, count = 0, 0
    for size in sizes:
        total += size
        if total > budget and (count or not at_least_one):
            break
        count += 1
    return count
