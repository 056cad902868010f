"""Streaming from object storage: one workload's engine reading its dataset from disk, then
from an S3 API server on loopback (moto's server, started here in a process of its own)
through the local cache: cold (an empty cache that holds the dataset), warm (the same
cache, filled by a pass before the runs), and cold under a tight limit (half the dataset,
or one entry per reading thread beside the tables), each with the cache folder's peak
disk use beside its limit. The server's CPU counts in the CPU per sample (it is a child
of this process).

Goals: warm within 10% of local, cold at 80% of local or more on loopback, disk use never
above the limit. The server's delivery rate is measured in the same run: a cold epoch
cannot beat the local epoch nor the transfer of what it fetches, whichever takes longer."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.machine import Runs, measured
from benchmarks.report_streaming import streaming_lines
from benchmarks.workloads import WORKERS
from medshard.shards.publish import publish
from medshard.shards.reader import open_dataset
from medshard.shards.storage import S3Store

__all__ = ["STREAMED", "DiskPeak", "loopback_s3", "run_streaming", "streaming_lines"]

# one 2D and one 3D workload, as a streamed dataset is laid out and read: in shards of a
# size that streams (MosaicML Streaming and LitData write 64 MB ones; mammo-tiles is 69 MB
# in all), a few shards (a volume counts as one) at a time, on disk and from the URL alike
STREAMED = {
    "mammo-tiles": {"ingest": {"shard_bytes": 8 * 2**20}, "shuffle_shards": 2},
    "fomo-mri": {"ingest": {}, "shuffle_shards": 4},
}
BUCKET = "medshard-bench"
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def loopback_s3(timeout: float = 60.0) -> Iterator[str]:
    """An S3 API server on 127.0.0.1 with one bucket, in a process of its own (a server
    apart from the loader, as a store is; its Python never competes with the loader's
    threads for this process's GIL); yields its endpoint. Credentials are set for the
    while (moto takes any), then put back."""
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {name: os.environ.get(name) for name in _CREDENTIALS}
    os.environ.update(_CREDENTIALS)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's S3 server did not start on port {port}")
            time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class DiskPeak:
    """The most bytes the files under `root` held at once, polled in a thread."""

    def __init__(self, root: Path, interval: float = 0.1):
        self.root, self.interval, self.peak = Path(root), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _size(self) -> int:
        """Each file once by its inode: a folder renamed into place while the walk passes
        it would otherwise count twice, under its temporary name and its own."""
        sizes = {}
        for folder, _, files in os.walk(self.root):
            for name in files:
                with contextlib.suppress(OSError):  # evicted while counted
                    stat = os.stat(os.path.join(folder, name))
                    sizes[stat.st_dev, stat.st_ino] = stat.st_size
        return sum(sizes.values())

    def _poll(self) -> None:
        while True:
            self.peak = max(self.peak, self._size())
            if self._stop.wait(self.interval):
                break

    def __enter__(self) -> DiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._size())


def _sizes(ds: Path) -> tuple[int, int, int]:
    """(bytes of the dataset, the least cache limit it accepts: tables + largest entry,
    the largest entry)."""
    local = open_dataset(ds)
    total = sum(p.stat().st_size for p in ds.rglob("*") if p.is_file())
    tables = sum(p.stat().st_size for p in ds.iterdir() if p.is_file())
    rows = local.manifest.select(["zarr_path", "bytes"]).to_pylist()
    entries = [s.bytes for s in local.card.shards] + [r["bytes"] for r in rows if r["zarr_path"]]
    largest = max(entries, default=0)
    return total, tables + largest, largest


def _remote(engine, url: str, endpoint: str, cache: Path, limit: int, runs: Runs) -> dict:
    """`measured` figures of the engine reading `url` through `cache` under `limit`."""

    def make():
        ds = open_dataset(url, cache_dir=cache, cache_limit=limit, endpoint_url=endpoint)
        return engine(ds, True)

    with DiskPeak(cache) as disk:
        figures = measured("engine", make, runs)
    figures |= {"cache_limit_mb": limit / 2**20, "cache_peak_mb": disk.peak / 2**20}
    return figures


def _cold(engine, url, endpoint, cache: Path, limit: int, repetitions: int) -> dict:
    """Each run from an empty cache; the run of median speed, with the highest peak."""
    runs = []
    for _ in range(max(1, repetitions)):
        shutil.rmtree(cache, ignore_errors=True)
        runs.append(_remote(engine, url, endpoint, cache, limit, ONCE))
    speeds = [r["samples_per_s"] for r in runs]
    middle = min(runs, key=lambda r: abs(r["samples_per_s"] - statistics.median(speeds)))
    return middle | {
        "runs_samples_per_s": speeds,
        "cache_peak_mb": max(r["cache_peak_mb"] for r in runs),
    }


ONCE = Runs(repetitions=1, warmup=0, min_seconds=0.0)  # a cold cache is cold once

FETCH_THREADS = 4  # the cache's fetches run four at a time (Mirror.prefetch)


def _server_rate(store: S3Store, name: str, into: Path | None = None, rounds: int = 2) -> float:
    """Bytes per second the server delivers of object `name` to FETCH_THREADS GETs at
    once: into memory, or with `into` (a folder) as the cache fetches, each object checked
    and written to a file there."""
    size, sha256 = store.head(name)

    def get(number: int) -> None:
        if into is None:
            store.get(name)
        else:
            store.download(name, into / f"fetched-{number}", sha256)

    if into is not None:
        into.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        started = time.perf_counter()
        list(pool.map(get, range(FETCH_THREADS * rounds)))
        seconds = time.perf_counter() - started
    if into is not None:
        shutil.rmtree(into, ignore_errors=True)
    return size * FETCH_THREADS * rounds / seconds


def _train_epoch(workload, ds: Path) -> tuple[int, int]:
    """(samples, bytes fetched) of a cold pass over the training split: its shards, or
    the arrays of its volumes, each fetched whole."""
    local = open_dataset(ds)
    rows = [r for r in local.manifest.to_pylist() if r["split"] == "train"]
    per_volume = workload.engine_options.get("samples_per_volume", 1)
    if any(r["zarr_path"] for r in rows):
        return len(rows) * per_volume, sum(r["bytes"] for r in rows)
    shards = sum(s.bytes for s in local.card.shards if s.split == "train")
    return len(rows), shards


def run_streaming(workload, table: Path, ds: Path, work: Path, runs: Runs) -> dict:
    """The engine on the workload's streamed dataset (`ds`, or `table` ingested as
    STREAMED lays it out) from disk and from the loopback server: cold, warm, tight."""
    layout = STREAMED[workload.name]
    if layout["ingest"]:
        ds = work / "ds-streamed"
        workload.ingest(table, ds, WORKERS, **layout["ingest"])
    engine = functools.partial(workload.engine, shuffle_shards=layout["shuffle_shards"])
    total, least, largest = _sizes(ds)
    samples, fetched = _train_epoch(workload, ds)
    # tight: half the dataset, and room for the entry each reading thread is reading (a
    # Zarr volume being read can be evicted by another thread's read when there is not)
    roomy_limit = int(total * 1.25) + 2**20
    tight_limit = max(least + (WORKERS - 1) * largest, total // 2)
    local = measured("engine", lambda: engine(ds, True), runs)
    with loopback_s3() as endpoint:
        url = f"s3://{BUCKET}/{workload.name}"
        store = S3Store(url, endpoint)
        publish(ds, store)
        objects = store.list()
        largest = max(objects, key=objects.get)
        rate = _server_rate(store, largest)
        fetch_rate = _server_rate(store, largest, into=work / "fetched")
        cold = _cold(engine, url, endpoint, work / "cache-cold", roomy_limit, runs.repetitions)
        cache = work / "cache-warm"
        _remote(engine, url, endpoint, cache, roomy_limit, ONCE)  # fills the cache
        warm = _remote(engine, url, endpoint, cache, roomy_limit, runs)
        tight = _cold(engine, url, endpoint, work / "cache-tight", tight_limit, runs.repetitions)
    for name in ("cache-cold", "cache-warm", "cache-tight", "ds-streamed"):
        shutil.rmtree(work / name, ignore_errors=True)
    return {
        "dataset_mb": total / 2**20,
        # what a cold epoch must fetch (every shard or volume; tables are small) against
        # what the server delivers: the transfer alone, beside the local epoch
        "server_mb_per_s": rate / 2**20,
        "fetch_mb_per_s": fetch_rate / 2**20,  # checked and written, as the cache fetches
        "fetch_threads": FETCH_THREADS,
        "epoch_samples": samples,
        "epoch_fetch_mb": fetched / 2**20,
        "least_limit_mb": least / 2**20,
        "layout": layout["ingest"] | {"shuffle_shards": layout["shuffle_shards"]},
        "local": local,
        "cold": cold,
        "warm": warm,
        "tight": tight,
    }
