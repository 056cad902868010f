"""Reading a volume's or a video's stored arrays from a dataset that may be remote: a
remote one's arrays are fetched into its cache first, fetched again should another
thread's fetch evict them before the read opened them, and fetched once more should
their cached copy fail its check (damaged on local disk, while the origin holds good
bytes); a file missing from a local dataset is named in one sentence."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from medshard.errors import CorruptDataError, DatasetError, MissingFileError

if TYPE_CHECKING:
    from medshard.loaders.sources import ClipSamples, PatchSamples

__all__ = ["fetched"]

T = TypeVar("T")
_FETCH_TRIES = 3  # before a sample is named missing: other threads may evict it in between


def fetched(source: PatchSamples | ClipSamples, row: int, read: Callable[[], T]) -> T:
    """`read()` of the stored arrays of item `row` of `source` (PatchSamples' volumes,
    ClipSamples' videos: its `dataset`, `rows` and `reader`)."""
    dataset, reader = source.dataset, source.reader
    key, group = source.rows.keys[row], str(source.rows.paths[row])
    mirror = dataset.mirror
    misses, fetched_again = 0, False
    while True:
        dataset.prefetch([key])
        try:
            return read()
        except (FileNotFoundError, MissingFileError) as exc:
            missing = exc.path if isinstance(exc, MissingFileError) else exc.filename
            misses += 1
            if mirror is None or misses == _FETCH_TRIES:
                break
        except CorruptDataError as exc:
            if mirror is None:
                raise
            if fetched_again:
                raise CorruptDataError(mirror.named(str(exc))) from exc
            fetched_again = True
            mirror.cache.drop(group)
            reader.forget(group)
    if mirror is not None:
        raise DatasetError(
            f"{dataset.location}: sample {str(key)!r} was evicted from its cache before it could "
            f"be read, {_FETCH_TRIES} times; give a cache_limit that holds one volume for "
            "each reading thread"
        )
    raise CorruptDataError(
        f"{dataset.location}: sample {str(key)!r}: {missing} is missing; the dataset was "
        "changed after ingest (medshard verify lists what is damaged)"
    )
