"""Ingest to an s3:// URL: the dataset is built on disk in a local build folder, under the
same lock and recovery as a local --out, then published at the URL (card last) and the
build folder removed. The rules of a local --out hold: only a medshard dataset is ever
replaced (with --overwrite), never a prefix that holds other objects; a rerun after an
interrupted upload builds again (byte-identical) and skips every object already uploaded
with the same checksum."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from medshard.errors import DatasetError
from medshard.ingest.output import OutputLock, Staging, recover_output
from medshard.shards.checksums import foreign_names
from medshard.shards.mirror import cache_root
from medshard.shards.publish import MARKER_NAME, RemoteDataset, publish
from medshard.shards.storage import S3Store

__all__ = ["RemoteClaim", "claim_remote"]


@dataclass
class RemoteClaim:
    """Holding an s3:// --out: its store, what is there, and the local build folder."""

    store: S3Store
    build: Path
    notes: list[str] = field(default_factory=list)
    remote: RemoteDataset | None = None

    @property
    def name(self) -> str:
        return self.store.url

    def card(self) -> dict | None:
        return self.remote.card

    def check(self, fingerprint_: str, overwrite: bool, inputs=()) -> bool:
        """True when the same dataset is already at the URL. Only a medshard dataset is
        ever replaced (with `overwrite`); a prefix that holds other objects is refused."""
        card = self.remote.card
        if card is not None:
            if card.get("fingerprint") == fingerprint_ and not overwrite:
                return True
            if not overwrite:
                raise DatasetError(
                    f"{self.name}: the prefix holds a different dataset; "
                    "choose another --out or pass --overwrite to replace it"
                )
            foreign = foreign_names(self.store.list(), card, (MARKER_NAME,))
            if foreign:
                more = f" and {len(foreign) - 1} more objects" if len(foreign) > 1 else ""
                raise DatasetError(
                    f"{self.name}: holds {foreign[0]!r}{more}, which the dataset does not; "
                    "move it out of the prefix before the dataset there is replaced"
                )
            return False
        if self.remote.objects and not self.remote.marker:
            raise DatasetError(
                f"{self.name}: the prefix holds objects and no medshard dataset (no "
                "medshard.json), so they are never replaced, not even with --overwrite; "
                "choose an empty prefix"
            )
        return False

    def changed(self) -> bool:
        return False

    def staging(self) -> RemoteStaging:
        return RemoteStaging(self)


class RemoteStaging(Staging):
    """A build in the local build folder; `commit` publishes it at the URL."""

    def __init__(self, claim: RemoteClaim):
        super().__init__(claim.build)
        self.claim = claim

    def commit(self) -> None:
        super().commit()
        publish(self.claim.build, self.claim.store)
        shutil.rmtree(self.claim.build)


def build_folder(store: S3Store) -> Path:
    """Where a dataset for `store`'s URL is built: under the cache folder's `builds/`."""
    host = quote(store.endpoint_url or "aws", safe="")
    return cache_root() / "builds" / host / quote(store.url, safe="")


@contextlib.contextmanager
def claim_remote(url: str | Path) -> Iterator[RemoteClaim]:
    """Hold an s3:// --out for one build on this machine: lock its build folder, recover
    what killed builds left there, and look at what the URL holds."""
    store = S3Store(url)
    build = build_folder(store)
    build.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(build, store.url) as lock:
        claim = RemoteClaim(store, build, list(lock.notes))
        recover_output(build)
        claim.remote = RemoteDataset.at(store)
        if claim.remote.marker and claim.remote.card is None:
            claim.notes.append(f"{claim.name}: resuming an interrupted upload")
        try:
            yield claim
        finally:
            recover_output(build)
