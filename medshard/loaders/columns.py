"""The manifest rows of the Zarr samples a loader reads, held as numpy columns: a loader
keeps a few arrays, not a Python dict per sample, so its memory does not grow with the
dataset beyond a few bytes per sample."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

__all__ = ["ZarrColumns"]

_LABELS = ("label", "labels", "target")


class ZarrColumns:
    """Rows of `manifest` with a Zarr array that `select` keeps, sorted by key."""

    def __init__(self, manifest: pa.Table, select: Callable[[dict], bool]):
        roles = manifest.select(["split", "fold", "zarr_path"]).to_pydict()
        keep = [
            i
            for i, (split, fold, path) in enumerate(zip(*roles.values()))
            if path and select({"split": split, "fold": fold})
        ]
        table = manifest.take(keep).sort_by("key")
        self.keys = np.asarray(table["key"].to_pylist(), dtype=str)
        self.paths = np.asarray(table["zarr_path"].to_pylist(), dtype=str)
        shapes = table["shape"].to_pylist()
        width = max((len(s) for s in shapes), default=0)
        self.shapes = np.asarray([list(s) + [0] * (width - len(s)) for s in shapes], np.int64)
        self.labels: dict[str, np.ndarray] = {}
        for name in _LABELS:
            if name not in table.column_names or table[name].null_count == len(table):
                continue
            values = table[name].to_pylist()
            if None in values:
                continue  # a field that some rows lack is left out, as label_fields does
            dtype = np.int64 if name == "label" else np.float32
            self.labels[name] = np.asarray(values, dtype)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[dict]:
        """Each row as a dict, made on the way (key, zarr_path, shape, label fields)."""
        for row, key in enumerate(self.keys):
            shape = [int(n) for n in self.shapes[row] if n]
            yield {"key": str(key), "zarr_path": str(self.paths[row]), "shape": shape} | (
                self.label_fields(row)
            )

    def label_fields(self, row: int) -> dict:
        """The label outputs of one row (as sources.label_fields gives them)."""
        out = {}
        for name, column in self.labels.items():
            out[name] = int(column[row]) if name == "label" else column[row]
        return out
