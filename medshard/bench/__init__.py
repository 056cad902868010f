"""Measuring loaders: the harness (samples/s, MB/s, first batch, peak memory), the lazy
per-file loaders people write today, and `medshard bench DATASET` on a user's dataset.
The repository's `benchmarks/` runs the workloads with them; it is never installed."""

from medshard.bench.dataset import bench_dataset
from medshard.bench.measure import Measurement, PeakRSS, measure

__all__ = ["Measurement", "PeakRSS", "bench_dataset", "measure"]
