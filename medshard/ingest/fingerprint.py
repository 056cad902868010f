"""What makes two ingests the same: their options, their tables' bytes, and the size and
modification time of every source file (so a fixed or edited input is noticed)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

__all__ = ["fingerprint"]


def fingerprint(identity: dict, tables: Sequence[Path], files: Sequence[str]) -> str:
    """What makes two ingests the same: their options, the bytes of their tables, and the
    size and modification time of every file they read (a fixed or edited input counts)."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for table in tables:
        digest.update(Path(table).read_bytes())
    for name in files:
        path = Path(name)
        inside = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in inside:
            stat = file.stat()
            digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
