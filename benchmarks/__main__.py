"""`python -m benchmarks` (and `make bench`): every workload's lazy baseline and the engine,
measured back to back in one run; results to benchmarks/results/."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
from pathlib import Path

import psutil
import torch
from rich.console import Console

from benchmarks.report import markdown_table, write_results
from benchmarks.workloads import WORKERS, WORKLOADS, decode_ceiling, rows_of
from medshard.bench import measure

console = Console()


def _machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def run_workload(name: str, work: Path, scale: int, repetitions: int, warmup: int) -> dict:
    workload = WORKLOADS[name]
    raw, ds = work / name / "raw", work / name / "ds"
    shutil.rmtree(work / name, ignore_errors=True)
    console.rule(name)
    table = workload.synth(raw, scale)
    ingested = workload.ingest(table, ds)
    console.print(
        f"ingested {rows_of(table)} inputs in {ingested.seconds:.1f} s "
        f"({ingested.mb_per_s:.1f} MB/s)"
    )
    result = {
        "name": name,
        "what": workload.what,
        "inputs": rows_of(table),
        "ingest_seconds": ingested.seconds,
        "ingest_mb_per_s": ingested.mb_per_s,
    }
    for mode in ("augmented", "plain"):
        augmented = mode == "augmented"
        baseline = measure(
            "baseline",
            lambda a=augmented: workload.baseline(table, ds, a),
            repetitions=repetitions,
            warmup=warmup,
        )
        engine = measure(
            "engine",
            lambda a=augmented: workload.engine(ds, a),
            repetitions=repetitions,
            warmup=warmup,
        )
        result[mode] = {
            "baseline": baseline.as_dict(),
            "engine": engine.as_dict(),
            "speedup": engine.samples_per_s / baseline.samples_per_s,
        }
        console.print(
            f"{mode}: baseline {baseline.samples_per_s:.1f} samples/s, engine "
            f"{engine.samples_per_s:.1f} samples/s: {result[mode]['speedup']:.1f}x"
        )
    if workload.image_column:
        result["decode_ceiling"] = decode_ceiling(table, workload.image_column)
    return result


def memory_growth(work: Path, scale: int) -> dict:
    """Peak RSS of the engine and the baseline at N and 4N samples (mammo-tiles)."""
    workload = WORKLOADS["mammo-tiles"]
    engine_mb, baseline_mb, samples = [], [], []
    for factor in (1, 4):
        raw, ds = work / "memory" / f"x{factor}" / "raw", work / "memory" / f"x{factor}" / "ds"
        table = workload.synth(raw, scale * factor)
        workload.ingest(table, ds)
        samples.append(rows_of(table))
        engine = measure("engine", lambda d=ds: workload.engine(d, True), repetitions=1, warmup=0)
        baseline = measure(
            "baseline", lambda t=table, d=ds: workload.baseline(t, d, True), repetitions=1, warmup=0
        )
        engine_mb.append(engine.peak_rss_mb)
        baseline_mb.append(baseline.peak_rss_mb)
    shutil.rmtree(work / "memory", ignore_errors=True)
    return {
        "workload": "mammo-tiles",
        "samples": samples,
        "engine_mb": engine_mb,
        "baseline_mb": baseline_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--scale", type=int, default=2, help="dataset size multiplier")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--no-memory", action="store_true", help="skip the N vs 4N memory run")
    args = parser.parse_args()
    results = {
        "machine": _machine(),
        "workers": WORKERS,
        "repetitions": args.repetitions,
        "warmup": args.warmup,
        "scale": args.scale,
        "page_cache": "warm (the warm-up run reads every file first)",
        "workloads": [
            run_workload(n, args.work, args.scale, args.repetitions, args.warmup)
            for n in args.workloads.split(",")
        ],
    }
    if not args.no_memory:
        results["memory"] = memory_growth(args.work, args.scale)
    shutil.rmtree(args.work, ignore_errors=True)
    paths = write_results(results, args.out)
    console.print(markdown_table(results))
    console.print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
