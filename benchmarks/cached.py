"""fomo-mri's cached peers: MONAI PersistentDataset (deterministic part on disk) and
CacheDataset (in memory), each prepared once per mode and measured like the engine."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from benchmarks.machine import disk_mb, measured, prepared
from benchmarks.workloads import MRI_MODALITIES, PATCH, PATCHES_PER_VOLUME, WORKERS
from medshard.bench.baselines.cached import monai_dataset, monai_loader, monai_transforms, prepare

__all__ = ["KINDS", "run_cached"]

KINDS = {"persistent": "MONAI PersistentDataset", "cache": "MONAI CacheDataset"}


def run_cached(table: Path, work: Path, augment, repetitions: int, warmup: int, console) -> dict:
    """{kind: {"system", mode: figures, "prepare": {mode: seconds, peak, disk}}}."""
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    items = [{key: str(table.parent / r[key]) for key in (*MRI_MODALITIES, "seg")} for r in rows]
    results = {}
    for kind, system in KINDS.items():
        result: dict = {"system": system, "prepare": {}, "workers": WORKERS}
        for mode, config in (("augmented", augment), ("plain", None)):
            chains = monai_transforms(MRI_MODALITIES, PATCH, PATCHES_PER_VOLUME, config)
            cache = work / f"monai-{kind}-{mode}"
            shutil.rmtree(cache, ignore_errors=True)

            def build(kind=kind, chains=chains, cache=cache):
                dataset = monai_dataset(kind, items, chains, cache)
                prepare(dataset)
                return dataset

            dataset, preparation = prepared(build)
            preparation["disk_mb"] = disk_mb(cache) if cache.exists() else 0.0
            result["prepare"][mode] = preparation
            result[mode] = measured(
                kind, lambda d=dataset: monai_loader(d, WORKERS), repetitions, warmup
            )
            console.print(
                f"{system} {mode}: prepared in {preparation['seconds']:.1f} s, "
                f"{result[mode]['samples_per_s']:.1f} samples/s"
            )
            del dataset
            shutil.rmtree(cache, ignore_errors=True)
        results[kind] = result
    return results
