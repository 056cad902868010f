"""The cache's decisions as pure functions of sizes and times: no files, no processes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medshard.shards.cache_policy import least_limit, lru_victims, prefetch_count, whole_shards


def test_nothing_is_evicted_while_the_incoming_entry_fits():
    assert lru_victims([(10, 1.0), (10, 2.0)], used=20, incoming=5, limit=25) == []
    assert lru_victims([(10, 1.0)], used=10, incoming=10**9, limit=None) == []


def test_the_least_recently_used_go_first_and_no_more_than_needed():
    entries = [(10, 5.0), (10, 1.0), (10, 3.0), (10, 2.0)]
    assert lru_victims(entries, used=40, incoming=10, limit=40) == [1]
    assert lru_victims(entries, used=40, incoming=25, limit=40) == [1, 3, 2]


def test_equal_times_evict_in_a_fixed_order():
    entries = [(4, 1.0), (4, 1.0), (4, 1.0)]
    assert lru_victims(entries, used=12, incoming=4, limit=12) == [0]


def test_no_room_when_the_rest_is_not_evictable():
    """Bytes being fetched and the tables are in `used` but no entry: the caller must
    read around the cache, never wait for room that cannot come."""
    assert lru_victims([(10, 1.0)], used=30, incoming=15, limit=30) is None
    assert lru_victims([], used=5, incoming=30, limit=30) is None


@pytest.mark.parametrize("seed", range(20))
def test_after_eviction_the_cache_holds_the_limit(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 50, size=12).tolist()
    times = rng.permutation(12).astype(float).tolist()
    pinned = int(rng.integers(0, 20))
    limit = pinned + max(sizes) + int(rng.integers(0, 200))
    incoming = int(rng.integers(1, limit - pinned + 1))
    used = pinned + sum(sizes)
    victims = lru_victims(list(zip(sizes, times)), used, incoming, limit)
    assert victims is not None  # every entry is evictable and one entry fits beside the tables
    assert used - sum(sizes[i] for i in victims) + incoming <= limit
    kept = [times[i] for i in range(12) if i not in victims]
    assert all(times[v] <= min(kept, default=np.inf) for v in victims)  # oldest ones only
    if victims:  # one victim fewer would not have been enough
        fewer = victims[:-1]
        assert used - sum(sizes[i] for i in fewer) + incoming > limit


def test_the_least_limit_holds_the_tables_and_the_largest_entry():
    assert least_limit(pinned=7, largest_entry=100) == 107
    for sizes in itertools.permutations([30, 100, 60]):
        limit = least_limit(7, max(sizes))
        for incoming in sizes:  # any one entry fits once the others are evicted
            used = 7 + sum(sizes)
            assert lru_victims([(s, 0.0) for s in sizes], used, incoming, limit) is not None


def test_a_split_is_read_whole_only_when_it_fits_beside_the_tables():
    assert whole_shards(split_bytes=90, pinned=10, limit=100)
    assert not whole_shards(split_bytes=91, pinned=10, limit=100)
    assert whole_shards(split_bytes=10**12, pinned=10, limit=None)


def test_prefetch_stays_within_its_budget_and_always_moves():
    assert prefetch_count([10, 10, 10, 10], budget=25) == 2
    assert prefetch_count([10, 10], budget=100) == 2
    assert prefetch_count([500, 1], budget=100) == 1  # one entry larger than the budget
    assert prefetch_count([], budget=100) == 0


def test_a_fetch_ahead_of_the_plan_fetches_only_what_fits():
    assert prefetch_count([10, 10, 10], budget=25, at_least_one=False) == 2
    assert prefetch_count([500, 1], budget=100, at_least_one=False) == 0  # never forced
    assert prefetch_count([], budget=100, at_least_one=False) == 0
