"""fomo-mri's cached peers: MONAI PersistentDataset (deterministic part on disk),
CacheDataset (in memory) and LitData (`optimize` to chunks on disk, then
`StreamingDataset`), each prepared once per mode and measured like the engine."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from benchmarks.machine import Runs, disk_mb, measured, prepared
from benchmarks.workloads import MRI_MODALITIES, PATCH, PATCHES_PER_VOLUME, WORKERS
from medshard.bench.baselines.cached import monai_dataset, monai_loader, monai_transforms, prepare
from medshard.bench.baselines.litdata_cached import (
    litdata_dataset,
    litdata_loader,
    litdata_prepare,
)

__all__ = ["KINDS", "run_cached"]

KINDS = {
    "persistent": "MONAI PersistentDataset",
    "cache": "MONAI CacheDataset",
    "litdata": "LitData optimize + StreamingDataset",
}


def _build(kind: str, items: list[dict], chains, cache: Path):
    """(dataset, its loader maker), the preparation done: the deterministic part of
    `chains` run once per volume and kept where `kind` keeps it."""
    if kind == "litdata":  # the same MONAI transforms, the cached part in LitData chunks
        litdata_prepare(items, chains, cache, workers=WORKERS)
        return litdata_dataset(cache, chains), litdata_loader
    dataset = monai_dataset(kind, items, chains, cache)
    prepare(dataset)
    return dataset, monai_loader


def run_cached(table: Path, work: Path, augment, runs: Runs, console) -> dict:
    """{kind: {"system", mode: figures, "prepare": {mode: seconds, peak, disk}}}."""
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    items = [{key: str(table.parent / r[key]) for key in (*MRI_MODALITIES, "seg")} for r in rows]
    results = {}
    for kind, system in KINDS.items():
        result: dict = {"system": system, "prepare": {}, "workers": WORKERS}
        for mode, config in (("augmented", augment), ("plain", None)):
            chains = monai_transforms(MRI_MODALITIES, PATCH, PATCHES_PER_VOLUME, config)
            cache = work / f"{kind}-{mode}"
            shutil.rmtree(cache, ignore_errors=True)
            (dataset, loader), preparation = prepared(
                lambda kind=kind, chains=chains, cache=cache: _build(kind, items, chains, cache)
            )
            preparation["disk_mb"] = disk_mb(cache) if cache.exists() else 0.0
            result["prepare"][mode] = preparation
            result[mode] = measured(kind, lambda d=dataset, make=loader: make(d, WORKERS), runs)
            console.print(
                f"{system} {mode}: prepared in {preparation['seconds']:.1f} s, "
                f"{result[mode]['samples_per_s']:.1f} samples/s"
            )
            del dataset
            shutil.rmtree(cache, ignore_errors=True)
        results[kind] = result
    return results
