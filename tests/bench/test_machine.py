"""The benchmark's measuring pieces: process-tree CPU time, bytes per sample, copy rate."""

import subprocess
import sys
import time

import pytest
import torch

from benchmarks.machine import Runs, TreeCPU, copy_rate, measured


def test_cpu_time_of_child_processes_counts():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    with TreeCPU(interval=0.02) as cpu:
        subprocess.run([sys.executable, "-c", burn], check=True)
    assert cpu.seconds >= 0.25


def test_cpu_per_sample_and_bytes_per_sample_of_a_loader():
    batch = {
        "key": ["a", "b"],
        "image": torch.zeros(2, 1, 4, 4, 4),
        "mask": torch.zeros(2, 4, 4, 4, dtype=torch.uint8),
        "label": torch.zeros(2, dtype=torch.int64),  # not an array of the sample
    }

    class Loader:  # 20 ms of CPU per batch of 2
        def __iter__(self):
            for _ in range(2):
                started = time.process_time()
                while time.process_time() - started < 0.02:
                    pass
                yield batch

    figures = measured("loader", Loader, Runs(repetitions=2, warmup=1, min_seconds=0))
    assert figures["bytes_per_sample"] == 4**3 * 4 + 4**3
    assert figures["cpu_ms_per_sample"] == pytest.approx(10, rel=0.5)


def test_copy_rate_is_a_rate():
    assert copy_rate(megabytes=8, repeats=2) == pytest.approx(copy_rate(8, 2), rel=10)
    assert copy_rate(megabytes=8, repeats=2) > 0.1  # GB/s
