"""Peak RSS of one loader over one epoch, measured in a process of its own, so that the
memory a long benchmark run holds (MONAI's caches, earlier loaders) does not count:
`python -m benchmarks.memory WORKLOAD engine|baseline TABLE DATASET` prints it in MB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

__all__ = ["peak_rss_mb"]


def peak_rss_mb(workload: str, side: str, table: Path, dataset: Path) -> float:
    """The peak RSS (MB) of `side`'s augmented loader of `workload`, in a fresh process."""
    command = [sys.executable, "-m", "benchmarks.memory", workload, side, str(table), str(dataset)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    from benchmarks.workloads import WORKLOADS
    from medshard.bench import measure

    name, side, table, dataset = sys.argv[1:5]
    workload = WORKLOADS[name]
    if side == "engine":
        make = lambda: workload.engine(Path(dataset), True)  # noqa: E731
    else:
        make = lambda: workload.baseline(Path(table), Path(dataset), True)  # noqa: E731
    result = measure(side, make, repetitions=1, warmup=0)
    print(json.dumps({"peak_rss_mb": result.peak_rss_mb}))


if __name__ == "__main__":
    main()
