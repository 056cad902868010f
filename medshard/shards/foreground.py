"""`foreground.parquet`: per sample and mask label, a bounded random sample of voxel
coordinates, so that samplers can centre patches on foreground without reading masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medshard.errors import CorruptDataError
from medshard.shards.atomic import atomic_open

__all__ = ["FOREGROUND_NAME", "FOREGROUND_SCHEMA", "write_foreground", "read_foreground"]

FOREGROUND_NAME = "foreground.parquet"
FOREGROUND_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("coords", pa.list_(pa.list_(pa.int32(), 3)), nullable=False),  # (z, y, x)
    ]
)


def write_foreground(dataset: str | Path, rows: list[dict]) -> None:
    """rows: [{"key", "label", "coords": (n, 3) array}]."""
    table = pa.Table.from_pylist(
        [{**r, "coords": np.asarray(r["coords"], dtype=np.int32).tolist()} for r in rows],
        schema=FOREGROUND_SCHEMA,
    )
    with atomic_open(Path(dataset) / FOREGROUND_NAME) as handle:
        pq.write_table(table, handle, compression="zstd")


def read_foreground(dataset: str | Path) -> dict[str, dict[int, np.ndarray]]:
    """{key: {label: (n, 3) int array of (z, y, x)}}; empty when the dataset has no masks."""
    path = Path(dataset) / FOREGROUND_NAME
    if not path.is_file():
        return {}
    try:
        rows = pq.read_table(path, schema=FOREGROUND_SCHEMA).to_pylist()
    except Exception as exc:  # Thrift, ZSTD and Arrow each raise their own errors for bad bytes
        raise CorruptDataError(f"{path}: the file is damaged and cannot be read ({exc})") from exc
    result: dict[str, dict[int, np.ndarray]] = {}
    for row in rows:
        coords = np.asarray(row["coords"], dtype=np.int64).reshape(-1, 3)
        result.setdefault(row["key"], {})[row["label"]] = coords
    return result
