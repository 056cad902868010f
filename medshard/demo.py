"""`medshard demo`: the pipeline end to end on small synthetic data in real layouts."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from medshard.ingest.images import ImageIngestOptions, ingest_images
from medshard.report import human_bytes, ingest_table, inspect_table
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from medshard.synth.images import MAMMO_CLASSES, synth_embryo_stage, synth_mammo_tiles

__all__ = ["run_demo"]


def run_demo(out: Path | None, console: Console) -> None:
    """Synthesise, ingest, inspect and verify each workload; end with a summary table."""
    if out is None:
        with tempfile.TemporaryDirectory(prefix="medshard-demo-") as tmp:
            _run(Path(tmp), console, kept=False)
        return
    _run(Path(out), console, kept=True)


def _run(out: Path, console: Console, kept: bool) -> None:
    started = time.perf_counter()
    summary = Table(title="medshard demo", title_justify="left")
    for column in ("workload", "samples", "shards", "size", "ingest MB/s", "verify", "dataset"):
        summary.add_column(column)
    workloads = {
        "embryo-stage": (
            synth_embryo_stage,
            dict(image_col="image_path", label_col="stage", group_col="embryo_id"),
        ),
        "mammo-tiles": (
            synth_mammo_tiles,
            dict(
                image_col="tile_path",
                label_cols=MAMMO_CLASSES,
                group_col="patient_id",
                test_fraction=0.1,
                folds=5,
            ),
        ),
    }
    for name, (synth, flags) in workloads.items():
        console.rule(name)
        table = synth(out / "raw" / name, n=300, seed=0)
        console.print(f"synthesised {table}")
        options = ImageIngestOptions(
            table=table, out=out / "datasets" / name, workers=2, overwrite=True, **flags
        )
        result = ingest_images(options, command=f"medshard demo ({name})")
        console.print(ingest_table(result))
        for part in inspect_table(open_dataset(options.out)):
            console.print(part)
        report = verify_dataset(options.out)
        summary.add_row(
            name,
            str(result.samples),
            str(len(result.card.shards)),
            human_bytes(result.shard_bytes),
            f"{result.mb_per_s:.1f}",
            "OK" if report.ok else f"{len(report.problems)} problems",
            str(options.out),
        )
    console.rule("summary")
    console.print(summary)
    where = f"outputs in {out}" if kept else "outputs removed (medshard demo --out DIR keeps them)"
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s; {where}")
