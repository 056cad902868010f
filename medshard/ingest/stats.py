"""Per-channel intensity statistics: partial sums per sample (in a Dask task), pooled over
the training split into the card's ChannelStats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medshard.shards.card import ChannelStats

__all__ = ["SampleStats", "sample_stats", "pool_stats"]

_KEPT_VALUES = 20_000  # values per sample and channel kept for the percentiles
_BLOCK_VALUES = 1 << 20  # values summed at once: the float64 working copy stays near 8 MB


@dataclass(frozen=True)
class SampleStats:
    """Sums over one sample's pixels or voxels, per channel, in units of `1 / scale`."""

    total: np.ndarray  # (C,)
    total_sq: np.ndarray
    count: int  # values per channel
    minimum: np.ndarray
    maximum: np.ndarray
    kept: np.ndarray  # (C, k) values drawn for the percentiles

    @property
    def channels(self) -> int:
        return len(self.total)


def sample_stats(channel_first: np.ndarray, seed: int, scale: float = 1.0) -> SampleStats:
    """Statistics of a (C, ...) array or view divided by `scale` (a 16-bit image's 65535
    maps it to [0, 1]), summed in blocks: never a copy of the whole array."""
    planes = list(channel_first)
    shape = planes[0].shape
    count = int(np.prod(shape))
    total, total_sq = np.zeros(len(planes)), np.zeros(len(planes))
    rows = max(1, _BLOCK_VALUES // max(1, count // shape[0]))
    buffer = np.empty(min(rows, shape[0]) * (count // shape[0]))  # one block, reused
    for channel, plane in enumerate(planes):
        for start in range(0, shape[0], rows):
            part = plane[start : start + rows]
            block = buffer[: part.size].reshape(part.shape)
            np.copyto(block, part)
            total[channel] += block.sum()
            total_sq[channel] += np.square(block, out=block).sum()  # in place
    picks = np.random.default_rng(seed).choice(count, size=min(_KEPT_VALUES, count), replace=False)
    where = np.unravel_index(np.sort(picks), shape)
    return SampleStats(
        total=total / scale,
        total_sq=total_sq / scale**2,
        count=count,
        minimum=np.array([plane.min() for plane in planes], dtype=np.float64) / scale,
        maximum=np.array([plane.max() for plane in planes], dtype=np.float64) / scale,
        kept=np.stack([plane[where] for plane in planes]).astype(np.float64) / scale,
    )


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
    kept = np.concatenate([wide(s.kept) for s in samples], axis=1)
    low, high = np.percentile(kept, 0.5, axis=1), np.percentile(kept, 99.5, axis=1)
    clipped = np.clip(kept, low[:, None], high[:, None])
    return ChannelStats(
        mean=mean.tolist(),
        std=np.sqrt(np.maximum(square - mean**2, 0.0)).tolist(),
        min=np.min([wide(s.minimum) for s in samples], axis=0).tolist(),
        max=np.max([wide(s.maximum) for s in samples], axis=0).tolist(),
        p0_5=low.tolist(),
        p99_5=high.tolist(),
        clipped_mean=clipped.mean(axis=1).tolist(),
        clipped_std=clipped.std(axis=1).tolist(),
    )
