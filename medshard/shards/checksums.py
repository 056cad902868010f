"""sha256 checksums of a dataset's files: recorded in the card when it is written, checked
when a file is read (the manifest, by `open_dataset`) and by `verify` (every file)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from medshard.errors import CorruptDataError, DatasetError, MissingFileError
from medshard.shards.foreground import FOREGROUND_NAME
from medshard.shards.layout import (
    CARD_NAME,
    MANIFEST_NAME,
    REJECTED_NAME,
    ZARR_DIR,
    index_name,
)

__all__ = [
    "MISMATCH",
    "check_file",
    "checked_files",
    "file_checksums",
    "file_sha256",
    "foreign_files",
    "foreign_names",
]

MISMATCH = "checksum mismatch: the file is damaged or was changed after ingest"
_ZARR_METADATA = "zarr.json"


def file_sha256(path: str | Path) -> str:
    """Checksum of a file read in blocks: a shard can be larger than memory allows."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_files(dataset: str | Path, shards: Iterable[str]) -> list[str]:
    """Relative paths of the files the card checksums besides the shards (whose sha256 the
    card's shard list already gives): tables, DALI indexes and Zarr metadata."""
    root = Path(dataset)
    tables = [n for n in (MANIFEST_NAME, REJECTED_NAME, FOREGROUND_NAME) if (root / n).is_file()]
    indexes = [index_name(shard) for shard in shards]
    # Zarr chunk data is left out: every chunk carries a crc32c that each read checks
    # (zarr_store), and verify compares each array's values with the sha256 in its
    # zarr.json, which is hashed here. Hashing the chunk files too would re-read every
    # volume at ingest and in verify for no protection that those two do not give.
    metadata = sorted(
        p.relative_to(root).as_posix() for p in (root / ZARR_DIR).rglob(_ZARR_METADATA)
    )
    return tables + indexes + metadata


def foreign_files(dataset: str | Path, card: dict) -> list[str]:
    """Relative paths of files in a dataset's folder that are not the dataset's own (a
    user's notes beside the shards): replacing the dataset would remove them."""
    root = Path(dataset)
    shards = [s.get("path") for s in card.get("shards") or [] if isinstance(s, dict)]
    older = () if card.get("checksums") else checked_files(root, [s for s in shards if s])
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return foreign_names(names, card, older)


def foreign_names(names: Iterable[str], card: dict, also_own: Iterable[str] = ()) -> list[str]:
    """Which of `names` (files of a folder, objects of a prefix) the dataset of `card`
    does not own: its card, shards, indexes, checksummed files, Zarr store and `also_own`."""
    shards = [s.get("path") for s in card.get("shards") or [] if isinstance(s, dict)]
    own = {CARD_NAME, *shards, *(index_name(s) for s in shards if s), *also_own}
    own |= set(card.get("checksums") or ())
    return sorted(
        name
        for name in names
        if name not in own and not name.startswith(f"{ZARR_DIR}/")  # chunks: their crc32c
    )


def file_checksums(dataset: str | Path, shards: Iterable[str]) -> dict[str, str]:
    """{relative path: sha256} of every file `checked_files` lists."""
    root = Path(dataset)
    return {name: file_sha256(root / name) for name in checked_files(root, shards)}


def check_file(dataset: str | Path, name: str, expected: str | None) -> None:
    """Raise CorruptDataError when file `name` of the dataset differs from its checksum;
    a card written before checksums gives none, and the check is skipped."""
    path = Path(dataset) / name
    if expected is None:
        return
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise DatasetError(
            f"{Path(dataset) / CARD_NAME}: the card lists {name!r}, outside the dataset"
        )
    if not path.is_file():
        raise MissingFileError(path)
    if file_sha256(path) != expected:
        raise CorruptDataError(f"{path}: {MISMATCH}")
