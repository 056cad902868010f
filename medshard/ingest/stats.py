"""Per-channel intensity statistics: partial sums per sample (in a Dask task), pooled over
the training split into the card's ChannelStats."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from medshard.shards.card import ChannelStats

__all__ = ["SampleStats", "sample_stats", "pool_stats"]

_KEPT_VALUES = 20_000  # values per sample and channel kept for the percentiles


@dataclass(frozen=True)
class SampleStats:
    """Sums over one sample's pixels or voxels, per channel, in units of `1 / scale`."""

    total: np.ndarray  # (C,)
    total_sq: np.ndarray
    count: int  # values per channel
    minimum: np.ndarray
    maximum: np.ndarray
    kept: np.ndarray | None  # (C, k) values drawn for the percentiles; None: no percentiles

    @property
    def channels(self) -> int:
        return len(self.total)


def sample_stats(channel_first: np.ndarray, key: str, scale: float = 1.0) -> SampleStats:
    """Statistics of a (C, ...) array divided by `scale` (a 16-bit image's 65535 maps it to
    [0, 1]); sums accumulate in float64 without a float64 copy of the array."""
    flat = channel_first.reshape(channel_first.shape[0], -1)
    total = flat.sum(axis=1, dtype=np.float64)
    total_sq = np.array([np.dot(row, row) for row in _float_rows(flat)])
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    picks = np.sort(rng.choice(flat.shape[1], size=min(_KEPT_VALUES, flat.shape[1]), replace=False))
    return SampleStats(
        total=total / scale,
        total_sq=total_sq / scale**2,
        count=flat.shape[1],
        minimum=flat.min(axis=1).astype(np.float64) / scale,
        maximum=flat.max(axis=1).astype(np.float64) / scale,
        kept=flat[:, picks].astype(np.float64) / scale,
    )


def _float_rows(flat: np.ndarray):
    """Each channel as float64, one at a time: squares of integers overflow their dtype."""
    for row in flat:
        yield row.astype(np.float64, copy=False)


def pool_stats(samples: list[SampleStats]) -> ChannelStats | None:
    """Pool samples into C channels, C the largest channel count: a one-channel (gray)
    sample counts as the same values in every channel."""
    if not samples:
        return None
    channels = max(s.channels for s in samples)
    if any(s.channels not in (1, channels) for s in samples):
        return None  # channel counts that do not broadcast (e.g. 2 beside 3): no pooled stats

    def wide(values: np.ndarray) -> np.ndarray:
        return np.broadcast_to(values, (channels, *values.shape[1:]))

    count = sum(s.count for s in samples)
    mean = sum(wide(s.total) for s in samples) / count
    square = sum(wide(s.total_sq) for s in samples) / count
    percentiles = {}
    if all(s.kept is not None for s in samples):
        kept = np.concatenate([wide(s.kept) for s in samples], axis=1)
        percentiles = {
            "p0_5": np.percentile(kept, 0.5, axis=1).tolist(),
            "p99_5": np.percentile(kept, 99.5, axis=1).tolist(),
        }
    return ChannelStats(
        mean=mean.tolist(),
        std=np.sqrt(np.maximum(square - mean**2, 0.0)).tolist(),
        min=np.min([wide(s.minimum) for s in samples], axis=0).tolist(),
        max=np.max([wide(s.maximum) for s in samples], axis=0).tolist(),
        **percentiles,
    )
