"""The 2D workloads with training copies: each kind of copy (raw `.npy`, JPEG or PNG) is
ingested beside the originals (its ingest time and disk measured), then the engine reads
it with the workload's augmentation and batch size. `sample_budget` says where one
core's time goes on the engine's original-bytes path, the part of a sample that is not
decoding being what keeps it from the decode-bound ceiling."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import Runs, disk_mb, measured, prepared
from benchmarks.workloads import WORKERS, decode_rates
from medshard.shards.reader import open_dataset

__all__ = ["copy_decode_ceiling", "run_copies", "sample_budget"]


def run_copies(workload, table: Path, work: Path, runs: Runs) -> dict:
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
                runs,
            )
        out[kind] = entry
        shutil.rmtree(ds, ignore_errors=True)
    return out


def copy_decode_ceiling(ds: Path, limit: int = 200) -> dict[str, float]:
    """`decode_rates` of encoded training copies, as of the originals."""
    samples = []
    for sample in open_dataset(ds).samples("train"):
        field = next(f for f in sample if f.startswith("train."))
        samples.append((sample[field], field.rsplit(".", 1)[1]))
        if len(samples) == limit:
            break
    return decode_rates(samples)


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
    """One core's milliseconds per sample on the engine's path through `ds` (augmented),
    step by step: reading and decoding the pixels, the geometric steps (drawn, made as
    views where they can be; a resize computes), and the copy into the batch as floats
    with the sample's gain and offset; run in this thread, one torch thread."""
    loader = workload.engine(ds, True)
    filler = getattr(loader, "filler", None)
    if filler is None or filler.on_device:  # DALI, or a GPU: nothing to take apart here
        return {}
    from medshard.loaders.augment import geometry_2d
    from medshard.loaders.frame_format import bit_depth_scale, stored_channels
    from medshard.loaders.images2d import _to_float

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        count = min(limit, len(filler.source))
        out = np.empty((filler.channels, *filler.size), np.float32)
        for i in range(count):  # the checked first read; later reads take the member alone
            filler._pixels(i)
        pixels = [filler._pixels(i) for i in range(count)]
        read = _per_sample(filler._pixels, count)

        drawn = filler.draw(np.arange(count), 0)  # a batch's draws, made at once

        def moved(i: int):
            x, mix = stored_channels(pixels[i], filler.channels)
            return geometry_2d(filler.chain, drawn[i][0], x), mix

        geometry = _per_sample(moved, count)
        done = [moved(i) for i in range(count)]

        def to_float(i: int) -> None:
            x, mix = done[i]
            _, gain, offset = drawn[i]
            _to_float(out, x, mix, gain / bit_depth_scale(pixels[i].dtype), offset)

        floats = _per_sample(to_float, count)
    finally:
        torch.set_num_threads(threads)
    return {
        "read_decode_ms": 1e3 * read,
        "geometry_ms": 1e3 * geometry,
        "to_float_ms": 1e3 * floats,
    }
