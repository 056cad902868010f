"""Read a CSV table of inputs and turn its cells into keys, labels, groups and splits."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from medshard.errors import BadInputError
from medshard.shards.layout import is_valid_key, key_from_path
from medshard.shards.tar_writer import MAX_KEY_LENGTH

T = TypeVar("T")

__all__ = [
    "LabelSpec",
    "check_key",
    "check_rows",
    "read_table",
    "refusal",
    "require_columns",
    "row_file",
    "row_key",
    "row_source",
]


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV with a header line; refuse a missing, unreadable or empty table."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(str(path), "the table file does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
            columns = [c.strip() for c in reader.fieldnames or []]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(str(path), f"the table is not a readable CSV ({exc})") from exc
    if not columns:
        raise BadInputError(str(path), "the table is empty (no header line)")
    if not rows:
        raise BadInputError(str(path), "the table has a header but no rows")
    return rows


def require_columns(path: str | Path, rows: list[dict[str, str]], names: Sequence[str]) -> None:
    """Refuse a table that lacks any of the named columns, listing the ones it has."""
    have = list(rows[0])
    missing = [n for n in names if n not in have]
    if missing:
        raise BadInputError(
            str(path),
            f"no column {', '.join(repr(m) for m in missing)} in the table "
            f"(its columns are: {', '.join(have)})",
        )


def row_source(table: str | Path, row: int) -> str:
    """How a message names a table row: 'labels.csv row 12' (1-based data row)."""
    return f"{table} row {row + 1}"


def row_key(row: dict[str, str], key_col: str | None, relative_path: str) -> str:
    """The sample key of a row: its key column, else derived from the image path."""
    return check_key(row[key_col] if key_col else key_from_path(relative_path))


def check_key(key: str) -> str:
    """`key` when it is a valid sample key; ValueError with the rule otherwise."""
    if not is_valid_key(key) or len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"key {key!r} is not a valid sample key (1-{MAX_KEY_LENGTH} of A-Z a-z 0-9 _ -)"
        )
    return key


def refusal(row: int | None, source: str, key: str | None, reason: str) -> dict:
    """One refused input as `rejected.parquet` records it; `row` is the table's 0-based
    data row, recorded from 1 as every message counts it."""
    return {"row": None if row is None else row + 1, "source": source, "key": key, "reason": reason}


def check_rows(
    table: str | Path, rows: list[dict[str, str]], check: Callable[[int, dict, str], T]
) -> tuple[list[T], list[dict]]:
    """Run `check(index, row, where)` on every row: what it returns is kept, and the
    BadInputError or ValueError it raises becomes a refusal naming the file or the row."""
    kept, refused = [], []
    for i, row in enumerate(rows):
        where = row_source(table, i)
        try:
            kept.append(check(i, row, where))
        except BadInputError as exc:
            refused.append(refusal(i, exc.source, None, exc.reason))
        except ValueError as exc:
            refused.append(refusal(i, where, None, str(exc)))
    return kept, refused


def row_file(
    root: Path, row: dict[str, str], column: str, where: str, allow_outside: bool = False
) -> Path:
    """The existing file or folder a row's column names, relative to `root`; a path that
    leads outside `root` is refused unless allowed."""
    if not row[column]:
        raise BadInputError(where, f"column {column!r} is empty")
    path = root / row[column]
    # Lexical, not resolved: a symlink inside the root is the user's own layout.
    inside = os.path.normpath(os.path.abspath(path)).startswith(
        os.path.join(os.path.normpath(os.path.abspath(root)), "")
    )
    if not (inside or allow_outside):
        raise BadInputError(
            where,
            f"the path {row[column]!r} in column {column!r} leads outside the root folder "
            f"{root}; pass --allow-outside-root to ingest it",
        )
    if not path.exists():
        raise BadInputError(str(path), f"file not found ({where})")
    return path


@dataclass(frozen=True)
class LabelSpec:
    """Which columns hold the label, and how to read them."""

    label_col: str | None = None
    label_cols: tuple[str, ...] = ()
    target_col: str | None = None
    classes: tuple[str, ...] = ()

    def __post_init__(self):
        if len(set(self.classes)) != len(self.classes):
            twice = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"--classes names {', '.join(map(repr, twice))} more than once")
        given = sum(
            [self.label_col is not None, bool(self.label_cols), self.target_col is not None]
        )
        if given > 1:
            raise ValueError("give at most one of --label-col, --label-cols and --target-col")

    @property
    def task(self) -> str | None:
        if self.label_col:
            return "classification"
        if self.label_cols:
            return "multilabel"
        if self.target_col:
            return "regression"
        return None

    @property
    def columns(self) -> list[str]:
        return [c for c in (self.label_col, *self.label_cols, self.target_col) if c]

    def with_classes_from(self, rows: list[dict[str, str]]) -> LabelSpec:
        """Fix the class list: the given --classes, else the sorted non-empty values."""
        if self.label_col is None or self.classes:
            return self
        found = sorted({r[self.label_col] for r in rows if r[self.label_col]})
        return LabelSpec(label_col=self.label_col, classes=tuple(found))

    @property
    def names(self) -> list[str]:
        return list(self.classes) if self.label_col else list(self.label_cols)

    def parse(self, row: dict[str, str]) -> dict:
        """Manifest label fields of a row; ValueError with the reason when a value is bad."""
        if self.label_col:
            value = row[self.label_col]
            if value not in self.classes:
                raise ValueError(
                    f"label {value!r} in column {self.label_col!r} is not one of the known "
                    f"classes ({', '.join(self.classes)})"
                )
            return {"label": self.classes.index(value)}
        if self.label_cols:
            vector = []
            for column in self.label_cols:
                if row[column] not in ("0", "1"):
                    raise ValueError(f"value {row[column]!r} in column {column!r} is not 0 or 1")
                vector.append(int(row[column]))
            return {"labels": vector}
        if self.target_col:
            try:
                target = float(row[self.target_col])
            except ValueError:
                target = math.nan
            if not math.isfinite(target):
                raise ValueError(
                    f"target {row[self.target_col]!r} in column {self.target_col!r} "
                    "is not a finite number"
                )
            return {"target": target}
        return {}

    def stratum(self, parsed: dict) -> str:
        """A string to stratify on: the class, or the multi-label combination."""
        if "label" in parsed:
            return str(parsed["label"])
        if "labels" in parsed:
            return "".join(str(v) for v in parsed["labels"])
        return ""
