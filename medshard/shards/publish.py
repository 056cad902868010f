"""Publish a dataset built on disk at an s3:// URL: every file uploaded, the card last, so
that a reader never sees a half-written dataset (no card: not a dataset).

While an upload is under way the prefix holds `.medshard-upload.json`, which tells a rerun
that the objects there are an unfinished upload of medshard's (resumed: an object already
uploaded with the same sha256 is skipped) and not someone else's. Replacing a dataset
first removes its card, and after the new card removes the objects the new dataset does
not hold.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from medshard.shards.atomic import TMP_MARK
from medshard.shards.card import read_card
from medshard.shards.checksums import file_sha256
from medshard.shards.layout import CARD_NAME
from medshard.shards.storage import S3Store

__all__ = ["MARKER_NAME", "PublishReport", "RemoteDataset", "publish"]

MARKER_NAME = ".medshard-upload.json"


@dataclass(frozen=True)
class RemoteDataset:
    """What is at a URL now: the card (parsed JSON, None when absent; {} when it is not a
    JSON object), whether an upload left its marker, and whether any object is there."""

    card: dict | None
    marker: bool
    objects: bool

    @classmethod
    def at(cls, store: S3Store) -> RemoteDataset:
        card = None
        if store.exists(CARD_NAME):
            try:
                card = json.loads(store.get(CARD_NAME))
            except ValueError:
                card = {}
            card = card if isinstance(card, dict) else {}
        return cls(card, store.exists(MARKER_NAME), bool(store.list(limit=1)))


@dataclass(frozen=True)
class PublishReport:
    uploaded: int
    skipped: int
    removed: int
    bytes: int


def publish(dataset: Path, store: S3Store, threads: int = 8) -> PublishReport:
    """Upload the dataset at `dataset` to `store`'s prefix, its card last; objects already
    there with the same size and sha256 are kept; afterwards objects that the dataset
    does not hold are removed."""
    card = read_card(dataset)
    digests = _digests(dataset, card)
    present = store.list()
    if CARD_NAME in present:  # the dataset being replaced stops being one first
        store.delete([CARD_NAME])
    store.put_bytes(MARKER_NAME, json.dumps({"fingerprint": card.fingerprint}).encode())

    def send(name: str) -> int:
        path = dataset / name
        size = path.stat().st_size
        if present.get(name) == size and store.head(name) == (size, digests[name]):
            return 0
        store.put_file(name, path, digests[name])
        return size

    with ThreadPoolExecutor(max_workers=threads) as pool:
        sent = list(pool.map(send, sorted(digests)))
    store.put_file(CARD_NAME, dataset / CARD_NAME, file_sha256(dataset / CARD_NAME))
    stale = sorted(set(present) - set(digests) - {CARD_NAME, MARKER_NAME})
    store.delete(stale)
    store.delete([MARKER_NAME])
    uploaded = sum(1 for size in sent if size)
    return PublishReport(uploaded, len(sent) - uploaded, len(stale), sum(sent))


def _digests(dataset: Path, card) -> dict[str, str]:
    """{name: sha256} of every file but the card (hidden and temporary files are no part
    of a dataset): from the card where it records one."""
    known = {**(card.checksums or {}), **{s.path: s.sha256 for s in card.shards}}
    names = sorted(
        p.relative_to(dataset).as_posix()
        for p in dataset.rglob("*")
        if p.is_file() and TMP_MARK not in p.name
    )
    return {
        name: known.get(name) or file_sha256(dataset / name)
        for name in names
        if name != CARD_NAME and not name.startswith(".") and "/." not in name
    }
