"""The measuring harness: what it reports comes from what it counted and timed."""

import time

import pytest
import torch

from medshard.bench import measure


class CountingLoader:
    """Batches of known size; counts how often it is iterated."""

    def __init__(self, batches: int, batch_size: int, pixels: int):
        self.batches, self.batch_size, self.pixels = batches, batch_size, pixels
        self.iterations = 0

    def __iter__(self):
        self.iterations += 1
        for _ in range(self.batches):
            yield {"image": torch.zeros(self.batch_size, self.pixels, dtype=torch.float32)}


def test_rates_come_from_the_counted_samples_and_bytes():
    loader = CountingLoader(batches=5, batch_size=3, pixels=1000)
    result = measure("x", lambda: loader, repetitions=3, warmup=1)
    assert loader.iterations == 4  # one warm-up run, three measured
    assert len(result.runs_samples_per_s) == 3
    assert result.samples_per_s == sorted(result.runs_samples_per_s)[1]  # the median
    bytes_per_sample = 1000 * 4
    assert result.mb_per_s / result.samples_per_s == pytest.approx(bytes_per_sample / 1e6)
    assert result.peak_rss_mb > 0 and result.first_batch_s >= 0


def test_runs_go_on_past_the_repetitions_until_they_last_min_seconds():
    class Slow(CountingLoader):
        def __iter__(self):
            for batch in super().__iter__():
                time.sleep(0.01)
                yield batch

    loader = Slow(batches=2, batch_size=1, pixels=1)  # at least 0.02 s a run
    result = measure("x", lambda: loader, repetitions=2, warmup=1, min_seconds=0.2)
    seconds = [2 / speed for speed in result.runs_samples_per_s]  # 2 samples a run
    assert len(seconds) > 2 and loader.iterations == 1 + len(seconds)
    assert sum(seconds) >= 0.2 > sum(seconds[:-1])  # it stops once they last 0.2 s


def test_a_loader_that_gives_nothing_is_run_no_more_than_asked():
    loader = CountingLoader(batches=0, batch_size=1, pixels=1)
    result = measure("x", lambda: loader, repetitions=2, warmup=1, min_seconds=60)
    assert loader.iterations == 3 and result.runs_samples_per_s == [0.0, 0.0]


def test_max_batches_stops_each_run_early():
    seen = []

    class Recording(CountingLoader):
        def __iter__(self):
            for batch in super().__iter__():
                seen.append(1)
                yield batch

    measure(
        "x",
        lambda: Recording(batches=10, batch_size=2, pixels=4),
        repetitions=2,
        warmup=0,
        max_batches=3,
    )
    assert len(seen) == 6
