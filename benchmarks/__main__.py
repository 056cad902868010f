"""`python -m benchmarks` (and `make bench`): every workload's lazy baseline and the engine,
measured back to back in one run (fomo-mri also against MONAI's cached datasets, the
volume workloads also at a quarter of their size for memory, mammo-tiles and fomo-mri also
streamed from an S3 API server on loopback); results to benchmarks/results/."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from rich.console import Console

from benchmarks.cached import run_cached
from benchmarks.copies import run_copies, sample_budget
from benchmarks.machine import Runs, disk_mb, machine, measured, prepared
from benchmarks.memory import peak_rss_mb
from benchmarks.report import markdown_table, write_results
from benchmarks.streaming import STREAMED, run_streaming
from benchmarks.workloads import PREFETCH, WORKERS, WORKLOADS, decode_ceiling, rows_of

console = Console()


def _ingest(workload, table: Path, ds: Path, workers: int) -> dict:
    result, preparation = prepared(lambda: workload.ingest(table, ds, workers))
    preparation |= {"mb_per_s": result.mb_per_s, "disk_mb": disk_mb(ds), "workers": workers}
    return preparation


def _parallelism(workload, ds: Path) -> dict:
    """Who does the work on each side, and the engine's loader class."""
    loader = workload.engine(ds, False)
    name = type(loader).__name__
    threads = name in ("SlotLoader", "ImageLoader")
    del loader
    return {
        "engine_loader": name,
        "engine": f"{WORKERS} threads in the training process"
        if threads
        else f"{WORKERS} DataLoader worker processes (prefetch {PREFETCH})",
        "baseline": f"{WORKERS} DataLoader worker processes (prefetch {PREFETCH})",
    }


def run_workload(
    name: str,
    work: Path,
    scale: int,
    runs: Runs,
    memory: bool,
    streaming: bool = True,
) -> dict:
    workload = WORKLOADS[name]
    raw, ds = work / name / "raw", work / name / "ds"
    shutil.rmtree(work / name, ignore_errors=True)
    console.rule(name)
    table = workload.synth(raw, scale)
    ingest = _ingest(workload, table, ds, WORKERS)
    console.print(
        f"ingested {rows_of(table)} inputs in {ingest['seconds']:.1f} s "
        f"({ingest['mb_per_s']:.1f} MB/s) on {WORKERS} workers"
    )
    result = {
        "name": name,
        "what": workload.what,
        "inputs": rows_of(table),
        "ingest_seconds": ingest["seconds"],
        "ingest_mb_per_s": ingest["mb_per_s"],
        "ingest": ingest,
        "parallelism": _parallelism(workload, ds),
    }
    if workload.volumes:  # the same ingest on one worker: how it scales
        single = _ingest(workload, table, work / name / "ds-1", 1)
        result["ingest_one_worker"] = single
        shutil.rmtree(work / name / "ds-1", ignore_errors=True)
    for mode in ("augmented", "plain"):
        augmented = mode == "augmented"
        baseline = measured("baseline", lambda a=augmented: workload.baseline(table, ds, a), runs)
        engine = measured("engine", lambda a=augmented: workload.engine(ds, a), runs)
        result[mode] = {
            "baseline": baseline,
            "engine": engine,
            "speedup": engine["samples_per_s"] / baseline["samples_per_s"],
        }
        console.print(
            f"{mode}: baseline {baseline['samples_per_s']:.1f} samples/s, engine "
            f"{engine['samples_per_s']:.1f} samples/s: {result[mode]['speedup']:.1f}x"
        )
    if name == "fomo-mri":
        result["cached"] = run_cached(table, work / name, workload.augment, runs, console)
    if workload.image_column:
        result["decode_ceiling"] = decode_ceiling(table, workload.image_column)
    if workload.copies:  # 2D: the engine on training copies, and where a sample's time goes
        result["copies"] = run_copies(workload, table, work / name, runs)
        result["budget"] = sample_budget(workload, ds)
    if streaming and name in STREAMED:  # local, then from object storage on loopback
        result["streaming"] = run_streaming(workload, table, ds, work / name, runs)
    if workload.volumes and memory:
        result["memory"] = memory_at_quarter(name, table, ds, work / name, result["inputs"])
    shutil.rmtree(work / name, ignore_errors=True)
    return result


def _quarter(table: Path, work: Path) -> Path:
    """A table of the first quarter of `table`'s inputs: beside it where its rows name
    their files, else (TIFF folders under the table's folder) in a folder of copies."""
    lines = [line for line in table.read_text().splitlines() if line]
    header, rows = lines[0], lines[1 : 1 + max(1, (len(lines) - 1) // 4)]
    if table.name != "classes.csv":
        quarter = table.with_name(f"quarter-{table.name}")
    else:  # nuclei: every sample folder under the root is an input
        quarter = work / "quarter-raw" / table.name
        quarter.parent.mkdir(parents=True, exist_ok=True)
        for row in rows:
            sample = row.split(",")[0]
            shutil.copytree(table.parent / sample, quarter.parent / sample)
    quarter.write_text("\n".join([header, *rows]) + "\n")
    return quarter


def memory_at_quarter(name: str, table: Path, ds: Path, work: Path, inputs: int) -> dict:
    """Peak RSS of engine and baseline (augmented, one epoch, each in a process of its
    own) at a quarter of the inputs (N) and at all of them (4N)."""
    workload = WORKLOADS[name]
    quarter, small = _quarter(table, work), work / "quarter-ds"
    workload.ingest(quarter, small, WORKERS)
    sizes = [(quarter, small, rows_of(quarter)), (table, ds, inputs)]
    figures = {
        side: [peak_rss_mb(name, side, t, d) for t, d, _ in sizes]
        for side in ("engine", "baseline")
    }
    shutil.rmtree(small, ignore_errors=True)
    shutil.rmtree(work / "quarter-raw", ignore_errors=True)
    return {
        "samples": [n for _, _, n in sizes],
        "engine_mb": figures["engine"],
        "baseline_mb": figures["baseline"],
    }


def memory_growth(work: Path, scale: int) -> dict:
    """Peak RSS of the engine and the baseline at N and 4N samples (mammo-tiles), each
    loader in a process of its own."""
    name = "mammo-tiles"
    workload = WORKLOADS[name]
    engine_mb, baseline_mb, samples = [], [], []
    for factor in (1, 4):
        raw, ds = work / "memory" / f"x{factor}" / "raw", work / "memory" / f"x{factor}" / "ds"
        table = workload.synth(raw, scale * factor)
        workload.ingest(table, ds, WORKERS)
        samples.append(rows_of(table))
        engine_mb.append(peak_rss_mb(name, "engine", table, ds))
        baseline_mb.append(peak_rss_mb(name, "baseline", table, ds))
    shutil.rmtree(work / "memory", ignore_errors=True)
    return {
        "workload": name,
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
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=Runs.min_seconds,
        help="more runs than --repetitions until a loader's measured runs last this long",
    )
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--no-memory", action="store_true", help="skip the N vs 4N memory runs")
    parser.add_argument(
        "--no-streaming", action="store_true", help="skip the runs from object storage"
    )
    args = parser.parse_args()
    names = args.workloads.split(",")
    results = {
        "machine": machine(),
        "workers": WORKERS,
        "prefetch": PREFETCH,
        "repetitions": args.repetitions,
        "warmup": args.warmup,
        "min_seconds": args.min_seconds,
        "scale": args.scale,
        "page_cache": "warm (the warm-up run reads every file first)",
        "workloads": [
            run_workload(
                n,
                args.work,
                args.scale,
                Runs(args.repetitions, args.warmup, args.min_seconds),
                not args.no_memory,
                not args.no_streaming,
            )
            for n in names
        ],
    }
    if not args.no_memory and "mammo-tiles" in names:
        results["memory"] = memory_growth(args.work, args.scale)
    shutil.rmtree(args.work, ignore_errors=True)
    paths = write_results(results, args.out)
    console.print(markdown_table(results))
    console.print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
