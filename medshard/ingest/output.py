"""Where an ingest writes: --out is never an input nor a folder of the user's, one build
holds it at a time, the dataset is staged beside it and swapped in whole, and what a killed
build left behind is recovered by the next one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medshard.errors import DatasetError
from medshard.shards.checksums import foreign_files
from medshard.shards.layout import CARD_NAME, FORMAT_NAME
from medshard.shards.storage import is_url

__all__ = [
    "Claim",
    "OutputLock",
    "Staging",
    "card_state",
    "check_output",
    "claim_output",
    "guard_output",
    "recover_output",
    "stale",
]


def _hidden(out: Path, kind: str) -> Path:
    """A new sibling of `out` for one build: `.NAME.partial-1a2b3c4d` or `.NAME.old-...`."""
    return out.parent / f".{out.name}.{kind}-{uuid.uuid4().hex[:8]}"


def _leftovers(out: Path, kind: str) -> list[Path]:
    """The siblings of `out` that builds named `kind` (their exact pattern, nothing else)."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.{kind}-[0-9a-f]{{8}}")
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir())


def guard_output(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an --out that is, holds or lies inside one of the inputs (symlinks resolved)."""
    target = Path(out).resolve()
    for given in inputs:
        source = Path(given).resolve()
        if target == source:
            relation = "is"
        elif source.is_relative_to(target):
            relation = "contains"
        elif target.is_relative_to(source):
            relation = "lies inside"
        else:
            continue
        raise DatasetError(
            f"{out}: --out {relation} {given}, which this ingest reads; "
            "choose an --out outside its inputs"
        )


def check_output(
    out: Path, fingerprint_: str, overwrite: bool, inputs: Sequence[Path] = ()
) -> bool:
    """True when the same dataset is already at `out`. Only a medshard dataset is ever
    replaced (with `overwrite`); any other file or non-empty folder is refused."""
    guard_output(out, inputs)
    if not out.exists():
        return False
    if not out.is_dir():
        raise DatasetError(f"{out}: the output path exists and is not a directory")
    card = _medshard_card(out)
    if card is not None:
        same = card.get("fingerprint") == fingerprint_
        if same and not overwrite:
            return True
        if not same and not overwrite:
            raise DatasetError(
                f"{out}: the output directory holds a different dataset; "
                "choose another --out or pass --overwrite to replace it"
            )
        foreign = foreign_files(out, card)
        if foreign:
            more = f" and {len(foreign) - 1} more files" if len(foreign) > 1 else ""
            raise DatasetError(
                f"{out}: holds {foreign[0]!r}{more}, which the dataset does not; move it out "
                "of the folder before the dataset there is replaced"
            )
        return False
    if any(out.iterdir()):
        raise DatasetError(
            f"{out}: the output directory is not empty and holds no medshard dataset, "
            "so it is never replaced, not even with --overwrite; "
            "choose an empty or new directory"
        )
    return False


def _medshard_card(out: Path) -> dict | None:
    """The card at `out` when it is a medshard card (a file of that name written by
    something else does not make a folder a dataset that --overwrite may replace)."""
    try:
        card = json.loads((out / CARD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("format") == FORMAT_NAME else None


class Staging:
    """A dataset under construction beside its final place; only `commit` makes it visible."""

    def __init__(self, out: Path):
        self.out = Path(out).resolve()  # a symlinked --out keeps its link; the target changes
        self.dir = _hidden(self.out, "partial")
        self.dir.mkdir(parents=True)

    def commit(self) -> None:
        """Swap the finished dataset into place; an old one is removed only afterwards (a
        kill between the two renames leaves it in `.NAME.old-*`, which the next run restores)."""
        old = None
        if self.out.exists():
            old = _hidden(self.out, "old")
            self.out.rename(old)
        self.dir.rename(self.out)
        if old is not None:
            shutil.rmtree(old)

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.dir.exists():
            self.abort()


def recover_output(out: Path) -> list[str]:
    """Undo what killed builds left beside `out` (call it under the lock): restore a dataset
    that an interrupted --overwrite moved aside, drop replaced and unfinished copies. Returns
    one line per thing done."""
    notes = []
    olds = _leftovers(out, "old")
    complete = [p for p in olds if (p / CARD_NAME).is_file()]
    if not out.exists() and complete:
        newest = max(complete, key=lambda p: p.stat().st_mtime_ns)
        newest.rename(out)
        olds.remove(newest)
        notes.append(
            f"{out}: restored the dataset that an interrupted --overwrite had moved to "
            f"{newest.name}"
        )
    if olds and (out / CARD_NAME).is_file():  # replaced by the dataset at `out`: done with
        for old in olds:
            shutil.rmtree(old)
        notes.append(f"{out}: removed {_names(olds)}, replaced by an interrupted --overwrite")
    partials = _leftovers(out, "partial")
    for partial in partials:
        shutil.rmtree(partial)
    if partials:
        notes.append(f"{out}: removed {_names(partials)}, left unfinished by an interrupted ingest")
    return notes


def _names(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths)


class OutputLock:
    """One build at a time per --out: `.NAME.lock` beside it, locked with filelock (the
    operating system releases it when its process dies) and naming its holder. `name` is
    what its messages call the output (an s3:// URL, whose build folder the user never
    named); the folder itself by default."""

    def __init__(self, out: Path, name: str | None = None):
        self.out = Path(out)
        self.name = name or str(self.out)
        self.path = self.out.parent / f".{self.out.name}.lock"
        self.notes: list[str] = []
        self._lock = None

    def acquire(self) -> None:
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.path, timeout=0, on_acquired=self._record)
        try:
            self._lock.acquire()
        except Timeout:
            raise DatasetError(
                f"{self.name}: another ingest is writing this dataset ({self._holder()}); "
                "wait until it ends or choose another --out"
            ) from None

    def release(self) -> None:
        # Unlinked while still held: a contender that opened the old file sees it unlinked
        # and retries (filelock checks), so nothing is left beside --out after a clean run.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._lock.release()

    def _record(self, fd: int) -> None:
        """Write who holds the lock; a record already there is a holder that died holding it."""
        previous = os.pread(fd, 4096, 0)
        if previous.strip():
            self.notes.append(
                f"{self.name}: took over the lock of an ingest that is no longer running "
                f"({_describe(previous)})"
            )
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)

    def _holder(self) -> str:
        try:
            return _describe(self.path.read_bytes())
        except OSError:
            return f"its lock {self.path} is held"

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(record: bytes) -> str:
    try:
        owner = json.loads(record)
        return f"pid {owner['pid']} on {owner['host']}, started {owner['started']}"
    except (ValueError, KeyError, TypeError):
        return "its holder left no readable record"


@dataclass
class Claim:
    """What holding --out found: lines to show the user, and the card there beforehand."""

    out: Path
    notes: list[str] = field(default_factory=list)
    card_before: tuple | None = None

    @property
    def name(self) -> str:
        return str(self.out)

    def card(self) -> dict | None:
        """The card of the dataset at --out as JSON, or None."""
        try:
            card = json.loads((self.out / CARD_NAME).read_text())
        except (OSError, ValueError):
            return None
        return card if isinstance(card, dict) else {}

    def check(self, fingerprint_: str, overwrite: bool, inputs: Sequence[Path] = ()) -> bool:
        """True when the same dataset is already at --out (check_output)."""
        return check_output(self.out, fingerprint_, overwrite, inputs)

    def staging(self) -> Staging:
        return Staging(self.out)

    def changed(self) -> bool:
        """Whether the dataset at --out is no longer the one that was there at the start."""
        return card_state(self.out) != self.card_before


def stale(card: dict | None, identity: dict, fingerprint_: str) -> bool:
    """Whether the dataset whose `card` is at --out was built with these very options from
    inputs that have changed since: then it is rebuilt, as another dataset would not be."""
    same = json.loads(json.dumps(identity, default=str))
    return (
        card is not None and card.get("options") == same and card.get("fingerprint") != fingerprint_
    )


def card_state(out: Path) -> tuple | None:
    """Which card is at `out` (inode, time, size), or None: tells a replaced dataset."""
    try:
        stat = (out / CARD_NAME).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@contextlib.contextmanager
def claim_output(out: Path, inputs: Sequence[Path] = ()) -> Iterator[Claim]:
    """Hold --out for one whole build: refuse it when it touches an input, lock it, recover
    what killed builds left; on the way out, whatever happened, put back a dataset that the
    build had moved aside and remove its unfinished staging. An s3:// --out is built on
    disk and published at its URL (upload.claim_remote)."""
    if is_url(out):
        from medshard.ingest.upload import claim_remote

        with claim_remote(out) as remote:
            yield remote
        return
    guard_output(out, inputs)
    out = Path(out).resolve()  # the same folder named through a symlink is the same lock
    with OutputLock(out) as lock:
        claim = Claim(out, list(lock.notes))
        claim.notes += recover_output(out)
        claim.card_before = card_state(out)
        try:
            yield claim
        finally:
            recover_output(out)
