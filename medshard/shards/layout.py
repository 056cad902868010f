"""Where every file of a dataset lives and how members are named (format version 1)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "CARD_NAME",
    "MANIFEST_NAME",
    "REJECTED_NAME",
    "WDS_DIR",
    "ZARR_DIR",
    "FIXED_MTIME",
    "KEY_PATTERN",
    "is_valid_key",
    "key_from_path",
    "shard_name",
    "index_name",
    "member_name",
    "split_member_name",
]

FORMAT_NAME = "medshard"
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)

CARD_NAME = "medshard.json"
MANIFEST_NAME = "manifest.parquet"
REJECTED_NAME = "rejected.parquet"
WDS_DIR = "wds"
ZARR_DIR = "zarr"

# Every tar member gets this mtime so that the same ingest gives byte-identical shards.
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_NOT_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def is_valid_key(key: str) -> bool:
    """True when `key` is a stable sample key: letters, digits, '_' and '-' only."""
    return bool(KEY_PATTERN.fullmatch(key))


def key_from_path(relative_path: str) -> str:
    """Derive a key from a path relative to the data root: 'a/b/x.1.png' -> 'a_b_x_1',
    'sub-01/flair.nii.gz' -> 'sub-01_flair'."""
    path = Path(relative_path)
    if path.suffix.lower() == ".gz":
        path = path.with_suffix("")
    without_suffix = str(path.with_suffix(""))
    return _NOT_KEY_CHARS.sub("_", without_suffix).strip("_")


def shard_name(split: str, index: int) -> str:
    """Relative path of a WebDataset shard: 'wds/train-000003.tar'."""
    return f"{WDS_DIR}/{split}-{index:06d}.tar"


def index_name(shard: str) -> str:
    """Relative path of the DALI index that sits beside a shard."""
    return shard[: -len(".tar")] + ".idx"


def member_name(key: str, field: str) -> str:
    """Tar member name 'KEY.FIELD' where FIELD is e.g. 'image.png', 'cls' or 'json'."""
    return f"{key}.{field}"


def split_member_name(name: str) -> tuple[str, str]:
    """Split a member name at its first dot into (key, field), as WebDataset and DALI do."""
    base = name.rsplit("/", 1)[-1]
    key, _, field = base.partition(".")
    return key, field
