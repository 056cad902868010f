"""`python -m benchmarks` from the repository, at the smallest scale: the results file has
every measured figure, and each ratio is computed from those figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


def test_benchmark_run_writes_ratios_computed_from_its_measurements(tmp_path):
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--workloads",
        "embryo-stage",
        "--scale",
        "1",
        "--repetitions",
        "1",
        "--warmup",
        "0",
        "--min-seconds",
        "0",
        "--no-memory",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "results"),
    ]
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results" / "latest.json").read_text())
    (workload,) = results["workloads"]
    assert workload["name"] == "embryo-stage" and workload["inputs"] == 300
    for mode in ("augmented", "plain"):
        figures = workload[mode]
        ratio = figures["engine"]["samples_per_s"] / figures["baseline"]["samples_per_s"]
        assert figures["speedup"] == pytest.approx(ratio)
        assert figures["engine"]["runs_samples_per_s"] == [figures["engine"]["samples_per_s"]]
    assert results["workers"] >= 1 and not (tmp_path / "work").exists()
