"""`manifest.parquet`: one row per sample, with an explicit schema and the format version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medshard.errors import CorruptDataError, DatasetError, FormatVersionError
from medshard.shards.atomic import atomic_open
from medshard.shards.layout import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    READABLE_VERSIONS,
    REJECTED_NAME,
)

__all__ = [
    "MANIFEST_SCHEMA",
    "REJECTED_SCHEMA",
    "write_manifest",
    "read_manifest",
    "write_rejected",
    "read_rejected",
]

_VERSION_KEY = b"medshard.format_version"

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("fold", pa.int16(), nullable=False),  # -1: in no fold (e.g. the test split)
        pa.field("subject", pa.string()),  # the group (patient, embryo) the sample belongs to
        pa.field("label", pa.int32()),  # class index (classification)
        pa.field("labels", pa.list_(pa.uint8())),  # 0/1 vector (multi-label)
        pa.field("target", pa.float64()),  # regression target
        pa.field("source", pa.list_(pa.string()), nullable=False),
        pa.field("source_sha256", pa.list_(pa.string()), nullable=False),
        pa.field("shape", pa.list_(pa.int64()), nullable=False),  # channel first: (c, y, x)
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("spacing", pa.list_(pa.float64())),
        pa.field("fps", pa.float64()),  # frames per second (video)
        pa.field("timestamps", pa.list_(pa.float64())),  # seconds of each frame (video)
        pa.field("shard", pa.string()),  # relative path of the tar holding the sample
        pa.field("offset", pa.int64()),  # byte offset of the sample's first tar header
        pa.field("members", pa.list_(pa.string())),  # fields in the tar, in order
        pa.field("zarr_path", pa.string()),
        pa.field("bytes", pa.int64(), nullable=False),  # bytes the sample occupies on disk
        # sha256 of the sample's bytes in its shard (offset .. offset + bytes), checked on
        # each random-access read; absent from manifests written before it
        pa.field("sample_sha256", pa.string()),
    ],
    metadata={_VERSION_KEY: str(FORMAT_VERSION).encode()},
)
_OPTIONAL_COLUMNS = {"sample_sha256"}  # read as nulls from older manifests

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64()),  # 0-based data row of the input table, when there is one
        pa.field("source", pa.string(), nullable=False),
        pa.field("key", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
    ],
    metadata={_VERSION_KEY: str(FORMAT_VERSION).encode()},
)


def _write(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_open(path) as handle:
        pq.write_table(table, handle, compression="zstd")


def _read(path: Path, schema: pa.Schema) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # Thrift, ZSTD and Arrow each raise their own errors for bad bytes
        raise _damaged(path, exc) from exc
    version = (table.schema.metadata or {}).get(_VERSION_KEY, b"?").decode(errors="replace")
    if not version.isdigit() or int(version) not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise FormatVersionError(
            f"{path}: format version {version!r} is not supported; "
            f"this medshard reads format versions {readable}"
        )
    for name in sorted(_OPTIONAL_COLUMNS & set(schema.names) - set(table.schema.names)):
        table = table.append_column(
            schema.field(name), pa.nulls(len(table), schema.field(name).type)
        )
    missing = set(schema.names) - set(table.schema.names)
    if missing:
        raise DatasetError(f"{path}: columns missing from the table: {', '.join(sorted(missing))}")
    try:
        return table.select(schema.names).cast(schema)  # parquet renames list items; restore
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise _damaged(path, exc) from exc


def _damaged(path: Path, exc: Exception) -> CorruptDataError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CorruptDataError(f"{path}: the file is damaged and cannot be read ({detail})")


def write_manifest(dataset: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write `manifest.parquet` atomically, rows in the order given."""
    _write(Path(dataset) / MANIFEST_NAME, rows, MANIFEST_SCHEMA)


def read_manifest(dataset: str | Path) -> pa.Table:
    """Read `manifest.parquet`, refusing a format version this reader does not know."""
    return _read(Path(dataset) / MANIFEST_NAME, MANIFEST_SCHEMA)


def write_rejected(dataset: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write `rejected.parquet`: every refused input with the reason."""
    _write(Path(dataset) / REJECTED_NAME, rows, REJECTED_SCHEMA)


def read_rejected(dataset: str | Path) -> pa.Table:
    """Read `rejected.parquet`."""
    return _read(Path(dataset) / REJECTED_NAME, REJECTED_SCHEMA)
