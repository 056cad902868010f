"""The cache of a dataset at a URL as a user meets it: its options through build_loader
and `medshard bench`, messages that name the URL rather than the cache folder, a damaged
cached copy fetched again, a limit refused before the tables stay behind, and a store
that stops answering told apart from a full cache; all against the loopback S3 server
(tests/s3_server.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from medshard.errors import CorruptDataError, DatasetError
from medshard.ingest.output import OutputLock
from medshard.ingest.upload import build_folder
from medshard.loaders.build import build_loader
from medshard.shards.reader import open_dataset
from medshard.shards.storage import RetryPolicy, S3Store
from tests.conftest import ingest
from tests.s3.helpers import SPEC, URL, damage, first_sample, medshard, nifti_twins, small_cache
from tests.s3_server import BUCKET


def test_build_loader_opens_a_url_through_the_cache_it_is_given(images, tmp_path):
    limit = small_cache(images.local)
    endpoint = images.server.endpoint
    loader = build_loader(
        URL, "train", cache_dir=tmp_path / "c", cache_limit=limit, endpoint_url=endpoint, **SPEC
    )
    keys = [key for batch in loader for key in batch["key"]]
    assert len(keys) == open_dataset(images.local).card.counts["train"].samples
    (folder,) = (tmp_path / "c" / "s3").glob("*/*")  # the cache given, bounded as given
    assert open_dataset(folder).mirror.limit == limit
    with pytest.raises(DatasetError, match="cache_limit '10 bytes' is not a size"):
        build_loader(URL, "train", cache_dir=tmp_path / "c", cache_limit="10 bytes", **SPEC)


def test_build_loader_refuses_cache_options_where_no_cache_is(images, tmp_path):
    with pytest.raises(DatasetError) as caught:
        build_loader(images.local, "train", cache_limit="1GB", **SPEC)
    assert str(caught.value) == (
        f"{images.local}: cache_limit apply only to a dataset at an s3:// URL, not to a directory"
    )
    ds = open_dataset(URL, cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError) as caught:
        build_loader(ds, "train", cache_dir=tmp_path / "other", **SPEC)
    assert str(caught.value) == (
        f"{URL}: the dataset is already open, so cache_dir cannot apply; give them to open_dataset"
    )
    assert not (tmp_path / "other").exists()


def test_bench_reads_a_url_through_the_cache_it_is_given(images, tmp_path):
    limit = small_cache(images.local)
    done = medshard(
        "bench", URL, "--endpoint-url", images.server.endpoint,
        "--cache-dir", str(tmp_path / "c"), "--cache-limit", str(limit),
        "--workers", "0", "--batch-size", "2", "--repetitions", "1", "--max-batches", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{URL} (train, batch 2, 0 workers)" in done.stdout
    (folder,) = (tmp_path / "c" / "s3").glob("*/*")
    assert open_dataset(folder).mirror.limit == limit


def test_a_cache_without_room_is_named_by_its_url(images, tmp_path):
    limit = small_cache(images.local, shards=1)  # one shard at a time
    ds = open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=limit)
    ds.mirror.store.retry = RetryPolicy(attempts=2, first_delay=0.01)
    (ds.path / "notes.bin").write_bytes(bytes(ds.mirror.limit))  # a file it may not evict
    shard = ds.card.shards[0]
    with pytest.raises(DatasetError) as caught:
        ds.mirror.local_file(shard.path, shard.bytes, shard.sha256)
    assert str(caught.value).startswith(f"{URL}/{shard.path}: the cache of {URL} has no room")
    assert str(tmp_path) not in str(caught.value)


def test_a_store_that_stops_answering_is_named_not_a_full_cache(images, tmp_path, monkeypatch):
    limit = small_cache(images.local, shards=1)  # one shard at a time
    ds = open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=limit)
    store, (first, second) = ds.mirror.store, ds.card.shards[:2]
    store.retry = RetryPolicy(attempts=3, first_delay=0.05, max_delay=0.1)
    stalled, started = threading.Event(), threading.Event()
    download = store.download

    def slow(name, dest, sha256=None):  # the first fetch hangs until the store is gone
        if name == first.path:
            started.set()
            stalled.wait(30)
        return download(name, dest, sha256)

    monkeypatch.setattr(store, "download", slow)
    failures = {}

    def fetch(shard):
        try:
            ds.mirror.local_file(shard.path, shard.bytes, shard.sha256)
        except DatasetError as exc:
            failures[shard.path] = str(exc)

    threads = [threading.Thread(target=fetch, args=(s,)) for s in (first, second)]
    threads[0].start()
    started.wait(30)  # the first fetch holds the only room
    images.server.kill()
    try:
        threads[1].start()
        time.sleep(1)  # far beyond the retry policy's waits
        stalled.set()
        for thread in threads:
            thread.join(60)
    finally:
        images.server.restart()
    assert sorted(failures) == [first.path, second.path]
    for shard in (first, second):  # the second waited for the first's fetch, then tried
        assert failures[shard.path].startswith(
            f"{URL}/{shard.path}: the object store did not answer after 3 tries"
        )


def cached_files(folder) -> list[str]:
    """The files of a cache folder, but its locks."""
    files = [p for p in folder.rglob("*") if p.is_file() and ".locks" not in p.parts]
    return sorted(p.relative_to(folder).as_posix() for p in files)


def test_a_refused_cache_limit_leaves_no_fetched_table_behind(images, tmp_path):
    with pytest.raises(DatasetError, match=f"^{URL}: a cache_limit of 2.0 kB cannot hold"):
        open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=2000)
    assert cached_files(tmp_path / "c") == []
    ds = open_dataset(URL, cache_dir=tmp_path / "c")  # then a limit that holds it
    tables = cached_files(tmp_path / "c")
    assert any(name.endswith("/manifest.parquet") for name in tables)
    with pytest.raises(DatasetError, match="cannot hold"):
        open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=2000)
    assert cached_files(tmp_path / "c") == tables  # what an earlier open fetched stays
    assert len(ds.manifest) == 14


def images_by_key(loader) -> dict:
    return {key: image for batch in loader for key, image in zip(batch["key"], batch["image"])}


def test_a_shard_damaged_in_the_cache_is_fetched_again_once(images, tmp_path):
    ds = open_dataset(URL, cache_dir=tmp_path / "c")  # no limit: whole shards are cached
    stored = images_by_key(build_loader(images.local, "train", **SPEC))
    assert images_by_key(build_loader(ds, "train", **SPEC)).keys() == stored.keys()
    shard = "wds/train-000000.tar"
    row = first_sample(images.local)
    cached = ds.path / shard
    data = bytearray(cached.read_bytes())
    data[row["offset"] + 600] ^= 0xFF  # inside the first image's bytes, on local disk
    cached.write_bytes(bytes(data))
    streamed = images_by_key(build_loader(ds, "train", **SPEC))
    assert all(torch.equal(streamed[k], stored[k]) for k in stored)
    assert cached.read_bytes() == (images.local / shard).read_bytes()  # fetched again
    damage(shard, row["offset"] + 600)  # now the object too: the copy fetched again is bad
    cached.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError) as caught:
        list(build_loader(ds, "train", **SPEC))
    assert str(caught.value).startswith(f"{URL}/{shard}: ")


def test_a_second_ingest_to_a_url_is_refused_naming_the_url(images):
    held = OutputLock(build_folder(S3Store(URL)))  # another ingest building for the URL
    with held, pytest.raises(DatasetError) as caught:
        ingest(images.table, Path(URL), **images.options)
    message = str(caught.value)
    assert message.startswith(f"{URL}: another ingest is writing this dataset (pid {os.getpid()} ")
    assert "builds" not in message


def test_a_volume_chunk_damaged_in_the_cache_is_fetched_again_once(s3, tmp_path):
    url = f"s3://{BUCKET}/mri-damaged"
    nifti_twins(tmp_path, url, 2)
    ds = open_dataset(url, cache_dir=tmp_path / "c")
    spec = dict(SPEC, patch_size=(16, 16, 16), training=False)  # each patch: a whole volume

    def patches(dataset) -> torch.Tensor:
        return torch.cat([batch["image"] for batch in build_loader(dataset, "train", **spec)])

    stored = patches(tmp_path / "local")
    assert torch.equal(patches(ds), stored)  # and the cache filled
    shard = "zarr/sub0/image/c/0/0/0/0"
    cached = ds.path / shard
    data = bytearray(cached.read_bytes())
    data[10] ^= 0xFF  # inside the first chunk, on local disk
    cached.write_bytes(bytes(data))
    assert torch.equal(patches(ds), stored)
    assert cached.read_bytes() == (tmp_path / "local" / shard).read_bytes()  # fetched again
    damage(shard, 10, url)  # now the object too: the copy fetched again is bad
    cached.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError) as caught:
        patches(ds)
    assert str(caught.value).startswith(f"{url}/{shard}: chunk ")


def test_a_damaged_object_costs_only_its_damaged_sample_when_skipping(
    images, tmp_path, caplog, monkeypatch
):
    row = first_sample(images.local)
    damage(row["shard"], row["offset"] + 600)  # one sample's bytes, inside its image
    ds = open_dataset(URL, cache_dir=tmp_path / "c")  # no limit: shards read whole
    assert ds.mirror.whole("train")
    loader = build_loader(ds, "train", on_error="skip", **SPEC)
    keys = [key for batch in loader for key in batch["key"]]
    every = open_dataset(images.local).card.counts["train"].samples
    assert row["key"] not in keys and len(keys) == every - 1  # not its shard's others
    assert loader.state.skipped_samples == 1
    assert f"skipped: {URL}/{row['shard']}: sample {row['key']!r}: checksum mismatch" in caplog.text
    fetched = []
    download = S3Store.download
    monkeypatch.setattr(
        S3Store, "download", lambda self, name, *a: fetched.append(name) or download(self, name, *a)
    )
    mirror = loader.source.files.mirror  # the one its reads and fetches ahead go through
    mirror.prefetch([row], ahead=True)  # takes the range, never the damaged shard again
    assert fetched == []
