"""The pieces of a remote dataset's cache folder that need no server: byte ranges held in
memory ahead of their reads."""

from __future__ import annotations

import pickle

from medshard.shards.ranges_ahead import RangesAhead


def test_ranges_ahead_are_taken_once_within_their_limit_oldest_dropped_first():
    held = RangesAhead(limit=10)
    assert held.put(("a", 0, 4), b"aaaa") and held.put(("a", 4, 4), b"bbbb")
    assert ("a", 0, 4) in held
    assert held.put(("b", 0, 4), b"cccc")  # 12 bytes: the oldest range goes
    assert held.take(("a", 0, 4)) is None
    assert held.take(("a", 4, 4)) == b"bbbb" and held.take(("a", 4, 4)) is None
    assert not held.put(("c", 0, 11), b"x" * 11)  # larger than the limit alone
    assert held.take(("b", 0, 4)) == b"cccc" and held._bytes == 0


def test_ranges_ahead_stay_in_their_process():
    held = RangesAhead(limit=10)
    held.put(("a", 0, 4), b"aaaa")
    copy = pickle.loads(pickle.dumps(held))
    assert copy.limit == 10 and copy.take(("a", 0, 4)) is None
