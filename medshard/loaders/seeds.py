"""Seeds derived from tuples of integers with NumPy's SeedSequence: the same on every
Python version and platform (Python's `hash()` promises neither), and well mixed, so
neighbouring tuples give unrelated seeds."""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(*values: int, bits: int = 63) -> int:
    """A `bits`-bit seed that only these non-negative integers give."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)
    return int(state[0]) >> (64 - bits)
