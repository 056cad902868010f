"""The 2D workloads with training copies: each kind of copy (raw `.npy`, JPEG or PNG) is
ingested beside the originals (its ingest time and disk measured), then the engine reads
it with the workload's augmentation and batch size. `sample_budget` says where one
core's time goes on the engine's original-bytes path, the part of a sample that is not
decoding being what keeps it from the decode-bound ceiling."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import disk_mb, measured, prepared
from benchmarks.workloads import WORKERS
from medshard.codecs import decode_image
from medshard.shards.reader import open_dataset

__all__ = ["copy_decode_ceiling", "run_copies", "sample_budget"]


def run_copies(workload, table: Path, work: Path, repetitions: int, warmup: int) -> dict:
    """Per kind of copy: its ingest (seconds, disk, MB/s) and the engine on it."""
    out = {}
    for kind, options in workload.copies.items():
        ds = work / f"ds-{kind}"
        result, ingest = prepared(lambda d=ds, o=options: workload.ingest(table, d, WORKERS, **o))
        ingest |= {"mb_per_s": result.mb_per_s, "disk_mb": disk_mb(ds)}
        entry = {"options": {k: str(v) for k, v in options.items()}, "ingest": ingest}
        if options.get("train_format", "raw") != "raw":
            entry["decode_ceiling"] = copy_decode_ceiling(ds)
        for mode in ("augmented", "plain"):
            entry[mode] = measured(
                f"copies-{kind}",
                lambda d=ds, a=mode == "augmented": workload.engine(d, a),
                repetitions,
                warmup,
            )
        out[kind] = entry
        shutil.rmtree(ds, ignore_errors=True)
    return out


def copy_decode_ceiling(ds: Path, limit: int = 200) -> float:
    """Copies per second one core decodes (the engine's decoder), times the cores: the
    decode-bound ceiling of encoded training copies, as for the originals."""
    samples = []
    for sample in open_dataset(ds).samples("train"):
        field = next(f for f in sample if f.startswith("train."))
        samples.append((sample[field], field.rsplit(".", 1)[1]))
        if len(samples) == limit:
            break
    started = time.perf_counter()
    for payload, ext in samples:
        decode_image(payload, ext)
    return len(samples) / (time.perf_counter() - started) * (os.cpu_count() or 1)


def _per_sample(step, count: int, repeats: int = 3) -> float:
    """The least one-thread CPU seconds per call of step(i) over `count` samples."""
    best = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        for i in range(count):
            step(i)
        best = min(best, (time.thread_time() - started) / count)
    return best


def sample_budget(workload, ds: Path, limit: int = 200) -> dict:
    """One core's milliseconds per sample on the engine's path through `ds` (augmented):
    reading and decoding the pixels, the whole slot fill (decode, geometric steps, the
    copy), and the batch's pass to floats; run in this thread, one torch thread."""
    loader = workload.engine(ds, True)
    filler = getattr(loader, "filler", None)
    if filler is None:  # another loader (DALI on a GPU): nothing to take apart
        return {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        count = min(limit, len(filler.source))
        batch = workload.batch_size
        arrays = {n: np.zeros(s, d) for n, (s, d) in filler.layout(batch).items()}
        filler.checked[:] = False
        for i in range(count):  # the checked first read, then the member alone
            filler.fill(arrays, i % batch, i, 0)
        pixels = _per_sample(filler._pixels, count)
        fill = _per_sample(lambda i: filler.fill(arrays, i % batch, i, 0), count)
        tensors = {n: torch.from_numpy(a) for n, a in arrays.items()}
        finish = _per_sample(lambda _: filler.finish(dict(tensors), 0), 5) / batch
    finally:
        torch.set_num_threads(threads)
    return {"read_decode_ms": 1e3 * pixels, "fill_ms": 1e3 * fill, "to_float_ms": 1e3 * finish}
