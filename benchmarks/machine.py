"""What a benchmark run records besides throughput: the machine, its memory-copy rate (the
bound no loader passes: bytes per sample / copy rate), the CPU time a loader spends per
sample across its whole process tree, and the peak memory and disk of a preparation."""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from medshard.bench import measure
from medshard.bench.measure import PeakRSS

__all__ = ["Runs", "TreeCPU", "copy_rate", "disk_mb", "machine", "measured", "prepared"]


def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "copy_gb_per_s": copy_rate(),
    }


def copy_rate(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of one thread copying a buffer far larger than the caches (numpy), best of
    `repeats`: a loader's output bytes cross memory at least once at this rate."""
    source = np.ones(megabytes * 2**20, np.uint8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return source.nbytes / best / 1e9


class TreeCPU:
    """CPU seconds of this process and of every process below it (DataLoader workers,
    forkserver children), polled in a thread: a worker that exits loses at most the last
    interval."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.seconds = 0.0
        self._children: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _own(self) -> float:
        times = psutil.Process().cpu_times()
        return times.user + times.system

    def _sample(self) -> None:
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                self._children[child.pid] = times.user + times.system

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeCPU:
        self._sample()
        self._before = self._own(), dict(self._children)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        own, before = self._before
        children = sum(t - before.get(pid, 0.0) for pid, t in self._children.items())
        self.seconds = self._own() - own + children


class _Counted:
    """A loader that counts the samples and the bytes of each sample it yields."""

    def __init__(self, loader: Iterable, tally: dict):
        self.loader, self.tally = loader, tally

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            size = len(batch["key"]) if "key" in batch else batch["image"].shape[0]
            self.tally["samples"] += size
            if not self.tally["bytes_per_sample"] and size:
                tensors = [v for v in batch.values() if isinstance(v, torch.Tensor)]
                arrays = [t for t in tensors if t.ndim >= 3]  # images and masks, not labels
                self.tally["bytes_per_sample"] = (
                    sum(t.numel() * t.element_size() for t in arrays) / size
                )
            yield batch


@dataclass(frozen=True)
class Runs:
    """How a loader is run: `warmup` runs, then at least `repetitions` measured ones, and
    more until those last `min_seconds` in all."""

    repetitions: int = 3
    warmup: int = 1
    min_seconds: float = 2.0


def measured(name: str, make_loader: Callable[[], Iterable], runs: Runs) -> dict:
    """`measure`'s figures of a loader run as `runs` says, with its CPU milliseconds per
    sample (all runs, warm-up and start-up included, whole process tree) and its output
    bytes per sample."""
    tally = {"samples": 0, "bytes_per_sample": 0.0}
    with TreeCPU() as cpu:
        result = measure(
            name,
            lambda: _Counted(make_loader(), tally),
            repetitions=runs.repetitions,
            warmup=runs.warmup,
            min_seconds=runs.min_seconds,
        )
    figures = result.as_dict()
    figures["cpu_ms_per_sample"] = 1e3 * cpu.seconds / max(tally["samples"], 1)
    figures["bytes_per_sample"] = tally["bytes_per_sample"]
    return figures


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


def prepared(prepare: Callable[[], object]) -> tuple[object, dict]:
    """(what `prepare` returns, its wall seconds and peak memory of the process tree)."""
    with PeakRSS() as rss:
        started = time.perf_counter()
        made = prepare()
        seconds = time.perf_counter() - started
    return made, {"seconds": seconds, "peak_rss_mb": rss.peak / 2**20}
