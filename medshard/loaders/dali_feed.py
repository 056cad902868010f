"""What the DALI backend reads: this rank's planned batches (loaders/partition.py, the
same plan as the torch backend's), fed to a batch-mode `fn.external_source` as the stored
bytes of each sample's members. Each sample is one `pread` at the manifest's offset,
checked against its checksum. Feeding the plan instead of letting DALI's reader choose
the order is what lets an epoch resume at a global position on any number of ranks."""

from __future__ import annotations

import concurrent.futures

import numpy as np

from medshard.errors import DatasetError
from medshard.loaders.sources import ShardSamples

__all__ = ["PlanFeed"]


class PlanFeed:
    """The `source` of `fn.external_source(batch=True, batch_info=True)`: for iteration
    `first + b`, batch b of `batches` as one list of uint8 arrays per entry of `members`
    (a member name, or alternatives joined by ';' such as 'image.png;image.jpg')."""

    def __init__(
        self,
        samples: ShardSamples,
        batches: list[np.ndarray],
        members: list[str],
        *,
        first: int = 0,
        threads: int = 2,
    ):
        self.samples, self.batches, self.first = samples, batches, first
        self.members = [m.split(";") for m in members]
        self._pool = concurrent.futures.ThreadPoolExecutor(max(threads, 1))  # reads overlap

    def __call__(self, info) -> tuple[list[np.ndarray], ...]:
        number = info.iteration - self.first
        if not 0 <= number < len(self.batches):
            raise StopIteration  # DALI asks ahead for batches past the end of the pass
        samples = list(self._pool.map(self._sample, self.batches[number].tolist()))
        return tuple(list(column) for column in zip(*samples))

    def _sample(self, index: int) -> list[np.ndarray]:
        row = self.samples.rows[index]
        raw = self.samples.files.read(
            row["shard"], row["offset"], row["bytes"], row["key"], row["sample_sha256"]
        )
        out = []
        for names in self.members:
            found = next((raw[name] for name in names if name in raw), None)
            if found is None:
                raise DatasetError(
                    f"{row['shard']}: sample {row['key']!r} has no member {' or '.join(names)!r}"
                )
            out.append(np.frombuffer(found, dtype=np.uint8))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
