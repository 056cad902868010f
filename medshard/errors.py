"""Named exceptions: every refusal says which file and why, in one sentence."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "MedshardError",
    "BadInputError",
    "DatasetError",
    "FormatVersionError",
    "CorruptDataError",
    "MissingFileError",
]


class MedshardError(Exception):
    """Base of every error medshard raises on purpose."""


class BadInputError(MedshardError, ValueError):
    """An input file or table row that cannot be ingested."""

    def __init__(self, source: str, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    def __reduce__(self):  # survives the trip back from a Dask worker process
        return (type(self), (self.source, self.reason))


class DatasetError(MedshardError, ValueError):
    """A dataset on disk that is missing, inconsistent or not what was asked for."""


class FormatVersionError(DatasetError):
    """A dataset written in a format version this reader does not know."""


class CorruptDataError(DatasetError):
    """Stored bytes that no longer match the checksum written at ingest."""


class MissingFileError(DatasetError):
    """A file that the dataset's card lists is not there (removed, or evicted from a
    remote dataset's cache)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"{path}: file not found")
        self.path = path
