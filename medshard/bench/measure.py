"""Measure a loader as training sees it: samples/s, MB/s, time to the first batch, peak RSS
of the whole process tree (DataLoader workers included) and GPU memory. The benchmarks
and `medshard bench` use it; speed is reported, never asserted."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import psutil
import torch

__all__ = ["Measurement", "PeakRSS", "measure"]


class PeakRSS:
    """Peak resident memory of this process and all its children, polled in a thread."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker that just exited
                total += child.memory_info().rss
        return total

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measurement:
    name: str
    samples_per_s: float
    mb_per_s: float  # decoded batch bytes delivered per second
    first_batch_s: float
    peak_rss_mb: float
    gpu_peak_mb: float | None = None
    runs_samples_per_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _batch_size_and_bytes(batch) -> tuple[int, int]:
    if isinstance(batch, dict):
        image = batch["image"]
        return image.shape[0], image.numel() * image.element_size()
    return len(batch), 0


def measure(
    name: str,
    make_loader: Callable[[], Iterable],
    *,
    repetitions: int = 3,
    warmup: int = 1,
    max_batches: int | None = None,
    min_seconds: float = 0.0,
) -> Measurement:
    """Build the loader once, as training does, and run over it warmup + repetitions times
    (to the end, or `max_batches`), and more while the measured runs last less than
    `min_seconds` in all (and give samples): an epoch of a fast loader is too short for a
    few runs to speak for it on a shared machine. The median over the measured runs is
    reported. The time to the first batch is the first run's: a cold start, worker
    start-up included."""
    speeds, throughputs, firsts = [], [], []
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        started = time.perf_counter()
        loader = make_loader()
        run, timed, samples = 0, 0.0, 1  # the measured runs' seconds; the last run's samples
        while run < warmup + repetitions or (timed < min_seconds and samples):
            samples = nbytes = 0
            first = None
            if run:
                started = time.perf_counter()
            for number, batch in enumerate(loader):
                if first is None:
                    first = time.perf_counter() - started
                count, size = _batch_size_and_bytes(batch)
                samples, nbytes = samples + count, nbytes + size
                if max_batches and number + 1 >= max_batches:
                    break
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            firsts.append(first or 0.0)
            if run >= warmup:
                speeds.append(samples / seconds)
                throughputs.append(nbytes / 1e6 / seconds)
                timed += seconds
            run += 1
        del loader
    return Measurement(
        name=name,
        samples_per_s=statistics.median(speeds),
        mb_per_s=statistics.median(throughputs),
        first_batch_s=firsts[0],
        peak_rss_mb=rss.peak / 2**20,
        gpu_peak_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        runs_samples_per_s=speeds,
    )
