"""Ingest to a URL on the loopback S3 server (tests/s3_server.py): the dataset published
and nothing else, a rerun that does nothing, an interrupted upload resumed, and prefixes
that hold other objects or another dataset never replaced unasked."""

from __future__ import annotations

from pathlib import Path

import pytest

from medshard.errors import DatasetError
from medshard.shards.layout import CARD_NAME
from medshard.shards.publish import MARKER_NAME, publish
from medshard.shards.reader import open_dataset
from medshard.shards.storage import S3Store
from medshard.shards.verify import verify_dataset
from tests.conftest import ingest
from tests.s3.helpers import URL, local_files, objects
from tests.s3_server import BUCKET


def test_ingest_to_a_url_publishes_the_dataset_and_nothing_else(images):
    local = images.local
    assert objects() == local_files(local)  # byte-identical builds: the same files
    ds = open_dataset(URL)
    assert ds.manifest.equals(open_dataset(local).manifest)
    assert repr(ds) == f"Dataset('{URL}', kind='images', samples=14)"


def test_a_rerun_with_the_same_inputs_does_nothing(images):
    table, options = images.table, images.options
    before = objects()
    assert ingest(table, Path(URL), **options).up_to_date
    assert objects() == before


def test_an_interrupted_upload_is_never_a_dataset_and_a_rerun_resumes_it(images, tmp_path):
    table, local, options = images.table, images.local, images.options

    class Interrupted(S3Store):  # the connection lost after three files
        sent = 0

        def put_file(self, name, path, sha256):
            if Interrupted.sent == 3:
                raise DatasetError(f"{self.object_url(name)}: the connection was lost")
            Interrupted.sent += 1
            super().put_file(name, path, sha256)

    url = f"s3://{BUCKET}/resumed"
    with pytest.raises(DatasetError, match="the connection was lost"):
        publish(local, Interrupted(url), threads=1)
    assert MARKER_NAME in objects("resumed/") and CARD_NAME not in objects("resumed/")
    with pytest.raises(DatasetError) as caught:
        open_dataset(url)
    assert str(caught.value) == f"{url}: not a medshard dataset (no medshard.json)"
    report = publish(local, S3Store(url))
    assert (report.skipped, report.uploaded) == (3, len(local_files(local)) - 4)
    assert objects("resumed/") == local_files(local)
    # and the same through a rerun of the ingest, after an upload cut at the card
    S3Store(URL).delete([CARD_NAME, "wds/train-000000.tar"])
    S3Store(URL).put_bytes(MARKER_NAME, b"{}")
    assert not ingest(table, Path(URL), **options).up_to_date
    assert objects() == local_files(local)
    assert verify_dataset(URL).ok


def test_a_prefix_of_other_objects_is_never_replaced(images):
    table, options = images.table, images.options
    S3Store(f"s3://{BUCKET}/thesis").put_bytes("chapter1.pdf", b"%PDF")
    for overwrite in (False, True):
        with pytest.raises(DatasetError) as caught:
            ingest(table, Path(f"s3://{BUCKET}/thesis"), overwrite=overwrite, **options)
        assert str(caught.value) == (
            f"s3://{BUCKET}/thesis: the prefix holds objects and no medshard dataset (no "
            "medshard.json), so they are never replaced, not even with --overwrite; "
            "choose an empty prefix"
        )
    assert objects("thesis/") == {"chapter1.pdf": 4}


def test_a_users_object_inside_a_dataset_prefix_stops_its_replacement(images):
    table, options = images.table, images.options
    url = f"s3://{BUCKET}/noted"
    uploaded = ingest(table, Path(url), **options)
    assert uploaded.dataset_bytes == sum(objects("noted/").values()) > 0  # what it reports
    S3Store(url).put_bytes("notes.txt", b"my notes")
    before = objects("noted/")
    with pytest.raises(DatasetError) as caught:
        ingest(table, Path(url), overwrite=True, **{**options, "shard_samples": 5})
    assert str(caught.value) == (
        f"{url}: holds 'notes.txt', which the dataset does not; move it out of the prefix "
        "before the dataset there is replaced"
    )
    assert objects("noted/") == before and verify_dataset(url).ok


def test_another_dataset_is_replaced_only_with_overwrite(images, tmp_path):
    table, options = images.table, images.options
    other = {**options, "shard_samples": 5}
    with pytest.raises(DatasetError) as caught:
        ingest(table, Path(URL), **other)
    assert str(caught.value) == (
        f"{URL}: the prefix holds a different dataset; "
        "choose another --out or pass --overwrite to replace it"
    )
    ds = open_dataset(URL, cache_dir=tmp_path / "c")
    old_shards = {s.path for s in ds.card.shards}
    list(ds.samples("val"))  # cached
    ingest(table, Path(URL), overwrite=True, **other)
    ingest(table, tmp_path / "local5", **other)
    assert objects() == local_files(tmp_path / "local5")  # the old shards removed
    again = open_dataset(URL, cache_dir=tmp_path / "c")  # the card changed: cache cleared
    assert {s.path for s in again.card.shards} != old_shards
    assert not any((again.path / "wds").glob("*.tar"))
    assert len([s for split in again.splits for s in again.samples(split)]) == 14


def test_derive_refuses_a_dataset_at_a_url_and_changes_nothing(images):
    from medshard.ingest.derive import DeriveOptions, derive_training_copies

    before = objects()
    with pytest.raises(DatasetError, match=rf"{URL}: derive changes a dataset in place"):
        derive_training_copies(DeriveOptions(out=Path(URL), train_size=16, quiet=True))
    assert objects() == before
