"""Atomic writes: a file appears under its final name only when it is complete."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["temporary_path", "atomic_open", "atomic_write_bytes", "TMP_MARK"]

TMP_MARK = ".tmp-"


def temporary_path(final: Path) -> Path:
    """A unique sibling of `final` that readers never mistake for a finished file."""
    return final.with_name(f"{final.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def atomic_open(final: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary sibling for writing; rename it to `final` only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(final: str | Path, data: bytes) -> None:
    """Write `data` to `final` atomically."""
    with atomic_open(final) as handle:
        handle.write(data)
