"""Run ingest tasks on Dask: a local cluster by default, or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medshard.errors import DatasetError

__all__ = ["dask_client", "run_tasks"]


@contextlib.contextmanager
def dask_client(
    workers: int | None = None, scheduler: str | None = None, processes: bool = True
) -> Iterator[Any]:
    """A `distributed.Client`: connected to `scheduler` when given, else to a new local
    cluster of `workers` single-threaded worker processes (threads when processes=False)."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise DatasetError(
                f"{scheduler}: cannot reach the Dask scheduler ({exc}); check its address "
                "and that it runs"
            ) from None
        with client:
            yield client
        return
    options = dict(
        n_workers=workers or os.cpu_count() or 1,
        threads_per_worker=1,
        processes=processes,
        dashboard_address=":0",  # None still binds 8787, and warns when it is taken
        silence_logs=logging.CRITICAL,  # a failed task is reported once, by us
    )
    try:
        cluster = LocalCluster(**options)
    except AssertionError:
        # distributed gives its event loop thread 10 s to start, then asserts; on a loaded
        # machine that compiles its modules on first use it once took longer: start again
        cluster = LocalCluster(**options)
    with cluster, Client(cluster) as client:
        if processes:
            client.run(_ignore_interrupts)
        yield client


def _ignore_interrupts() -> None:
    """Ctrl-C reaches the whole process group, and a worker process that took it would
    print tracebacks: the main process alone stops, cleans up and closes the cluster
    (which ends its workers). Runs in each worker process's main thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_tasks(
    client: Any, function: Callable, items: Sequence, *, description: str, quiet: bool = False
) -> list:
    """Map `function` over `items` on the cluster with a progress bar; results in order.
    The first task that raises cancels the rest and re-raises its exception."""
    from distributed import as_completed

    if not items:
        return []
    futures = client.map(function, items, pure=False)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, disable=quiet, transient=False) as progress:
            bar = progress.add_task(description, total=len(futures))
            for future in as_completed(futures):
                future.result()  # raises the task's own exception
                progress.advance(bar)
        return client.gather(futures)
    finally:
        client.cancel(futures)
