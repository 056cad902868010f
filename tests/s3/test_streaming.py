"""Streaming from object storage beyond reading it: the ingest commands' --endpoint-url,
a loader of a dataset at a URL named by its URL, a training run from a URL through a
bounded cache, and the fetch of the next batches into the cache ahead of the plan; all
against the loopback S3 server (tests/s3_server.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medshard.errors import DatasetError
from medshard.loaders.build import build_loader
from medshard.loaders.readahead import FetchAhead
from medshard.shards.reader import open_dataset
from medshard.trainers.config import load_config
from medshard.trainers.loop import train
from tests.s3.helpers import SPEC, URL, medshard, nifti_twins, objects, small_cache
from tests.s3_server import BUCKET
from tests.trainers.real_runs import TINY


def test_the_ingest_commands_upload_to_the_endpoint_they_are_given(images, tmp_path):
    url = f"s3://{BUCKET}/from-cli"
    args = ["--image-col", "image_path", "--label-col", "stage", "--workers", "1"]
    done = medshard(
        "ingest", "images", str(images.table), "--out", url, *args,
        "--endpoint-url", images.server.endpoint,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "medshard.json" in objects("from-cli/")
    assert len(open_dataset(url)) == 14


def test_a_loader_of_a_url_is_named_by_its_url(images, tmp_path):
    ds = open_dataset(URL, cache_dir=tmp_path / "c")
    loader = build_loader(ds, "train", **SPEC)
    assert loader.identity.path == URL
    state = {**loader.state_dict(), "dataset": "0" * 64}
    with pytest.raises(DatasetError) as caught:
        loader.load_state_dict(state)
    assert str(caught.value).startswith(f"{URL}: cannot resume from a loader state of another")
    with pytest.raises(DatasetError, match=rf"^{URL}: no fold 3; the dataset has 0 folds"):
        build_loader(ds, "train", fold=3, **SPEC)


@pytest.mark.parametrize("shuffle_shards", [None, 1])
def test_a_run_trains_from_a_url_through_a_cache_smaller_than_the_dataset(
    images, tmp_path, shuffle_shards
):
    limit = small_cache(images.local)
    config = tmp_path / "c.yaml"
    by_shards = f", shuffle_shards: {shuffle_shards}" if shuffle_shards else ""
    config.write_text(
        f"name: streamed\ndataset: {URL}\ntask: classification\noutput_dir: {tmp_path}\n"
        f"cache_dir: {tmp_path / 'cache-c'}\ncache_limit: {limit}\n"
        f"loader: {{batch_size: 3, num_workers: 0, backend: torch{by_shards}}}\n"
        f"model: {{name: '{TINY}'}}\noptim: {{lr: 0.01, schedule: none}}\nepochs: 1\n"
    )
    train(load_config(config), quiet=True)
    saved = load_config(tmp_path / "streamed" / "config.yaml")
    assert saved.dataset == URL and saved.cache_limit == limit  # the run's record names the URL
    assert saved.loader.shuffle_shards == shuffle_shards
    ds = open_dataset(URL, cache_dir=tmp_path / "cache-c", cache_limit=limit)
    assert ds.mirror.root.is_relative_to(tmp_path / "cache-c")
    assert ds.mirror.cache.usage() <= limit
    # a shard at a time: whole shards in the cache; else each sample's range, in memory
    whole_shards = list((ds.mirror.root / "wds").glob("train-*.tar"))
    assert bool(whole_shards) == bool(shuffle_shards)


def test_the_next_batches_shards_are_fetched_ahead_of_the_plan(images, tmp_path):
    ds = open_dataset(URL, cache_dir=tmp_path / "c")  # no limit: a split is read whole
    loader = build_loader(ds, "val", **SPEC)
    batches = loader.pass_batches()
    rows = loader.source.rows

    def fetch(indices):
        ds.prefetch([rows[int(i)]["key"] for i in indices], ahead=True)

    ahead = FetchAhead(fetch, batches, window=1, where=URL)
    ahead.advance(-1)  # the first batch alone
    ahead.close()
    first = {rows[int(i)]["shard"] for i in batches[0]}
    cached = {f"wds/{p.name}" for p in (ds.path / "wds").glob("*.tar")}
    assert cached == first
    streamed = [k for b in loader for k in b["key"]]  # the loader fetches ahead on its own
    assert sorted(streamed) == sorted(r["key"] for r in rows)
    every = {r["shard"] for r in rows}
    assert {f"wds/{p.name}" for p in (ds.path / "wds").glob("*.tar")} == every


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_plan_that_reads_a_shard_at_a_time_fetches_whole_shards_into_a_small_cache(
    images, tmp_path, shuffle
):
    local = images.local
    limit = small_cache(local, shards=2)  # two shards and the tables: not the whole split
    ds = open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=limit)
    assert not ds.mirror.whole("train")
    options = dict(batch_size=3, backend="torch", shuffle=shuffle, num_workers=2, device="cpu")
    loader = build_loader(ds, "train", shuffle_shards=1 if shuffle else None, **options)
    reader = loader.source.files.mirror  # the loader's threads read through its cache
    assert reader.whole("train")  # each shard fetched whole, then let go
    ranges, fetched = [], []
    plain_range, plain_download = reader.store.get_range, reader.store.download
    reader.store.get_range = lambda *span: ranges.append(span) or plain_range(*span)
    reader.store.download = lambda name, *rest: fetched.append(name) or plain_download(name, *rest)
    here = build_loader(local, "train", shuffle_shards=1 if shuffle else None, **options)
    streamed = [(k, i) for b in loader for k, i in zip(b["key"], b["image"])]
    stored = [(k, i) for b in here for k, i in zip(b["key"], b["image"])]
    assert [k for k, _ in streamed] == [k for k, _ in stored]  # the same plan as on disk
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(streamed, stored))
    assert not ranges and ds.mirror.cache.usage() <= limit
    train_shards = {r["shard"] for r in loader.source.rows}
    # each fetched whole; at a window's edge two readers and the fetch ahead may want
    # three shards of a cache of two, so one may be fetched again, never once per sample
    assert set(fetched) == train_shards and len(fetched) <= 2 * len(train_shards)
    shards = [r["shard"] for r in loader.source.rows]
    read = [shards[[r["key"] for r in loader.source.rows].index(k)] for k, _ in streamed]
    runs = [s for i, s in enumerate(read) if i == 0 or read[i - 1] != s]
    assert len(runs) == len(set(read))  # one shard after another, each read once


def test_volumes_stream_through_a_cache_of_one_volume_with_fetch_ahead(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSHARD_CACHE", str(tmp_path / "cache"))
    url = f"s3://{BUCKET}/mri-ahead"
    nifti_twins(tmp_path, url, 4)
    local = open_dataset(tmp_path / "local")
    group = max(r["bytes"] for r in local.manifest.to_pylist())
    tables = sum(p.stat().st_size for p in (tmp_path / "local").glob("*.parquet"))
    limit = tables + 4096 + group  # the least limit: one volume at a time
    ds = open_dataset(url, cache_dir=tmp_path / "c", cache_limit=limit)
    keys = [r["key"] for r in local.manifest.to_pylist()]
    assert ds.prefetch(keys[:2], ahead=True) == 0  # ahead of the plan: never forced in
    spec = dict(SPEC, patch_size=(8, 8, 8), training=False)
    streamed = [b["image"] for b in build_loader(ds, "train", **spec)]
    stored = [b["image"] for b in build_loader(local, "train", **spec)]
    assert len(streamed) == len(stored) > 0
    assert all(torch.equal(a, b) for a, b in zip(streamed, stored))
    assert ds.mirror.cache.usage() <= limit
    assert np.isfinite(torch.cat(streamed).numpy()).all()
    # a pass leaves no fetch writing into the cache behind it (one would pass the limit
    # unseen by whoever clears or shares the cache next)
    reserved = ds.mirror.cache.root / ".reserved"
    assert not any(".tmp-" in p.name for p in ds.mirror.cache.root.rglob("*"))
    assert not reserved.exists() or not any(reserved.iterdir())


def test_a_volume_evicted_between_its_fetch_and_its_read_is_fetched_again(
    s3,
    tmp_path,
    monkeypatch,
):
    """Threads sharing a small cache evict each other's volumes: one that went after its
    fetch and before its read is fetched again, never read as fill values."""
    import shutil

    url = f"s3://{BUCKET}/mri-evicted"
    nifti_twins(tmp_path, url, 2)
    ds = open_dataset(url, cache_dir=tmp_path / "c")
    fetch, evicted = ds.prefetch, []

    def fetch_then_lose(keys, *args, **kwargs):  # another thread's fetch evicts it at once
        count = fetch(keys, *args, **kwargs)
        if kwargs.get("ahead"):  # the fetch ahead of the plan: the reader's fetch loses it
            return count
        for key in keys:
            if key not in evicted:
                evicted.append(key)
                shutil.rmtree(ds.mirror.group(ds._rows[key]["zarr_path"], 0))
        return count

    monkeypatch.setattr(ds, "prefetch", fetch_then_lose)
    spec = dict(SPEC, patch_size=(8, 8, 8), training=False)
    streamed = [b["image"] for b in build_loader(ds, "train", **spec)]
    stored = [b["image"] for b in build_loader(tmp_path / "local", "train", **spec)]
    assert len(evicted) == 2 and torch.equal(torch.cat(streamed), torch.cat(stored))

    def fetch_then_always_lose(keys, *args, **kwargs):  # a cache far too small for the threads
        count = fetch(keys, *args, **kwargs)
        for key in [] if kwargs.get("ahead") else keys:
            shutil.rmtree(ds.mirror.group(ds._rows[key]["zarr_path"], 0))
        return count

    monkeypatch.setattr(ds, "prefetch", fetch_then_always_lose)
    with pytest.raises(DatasetError) as caught:
        list(build_loader(ds, "train", **spec))
    assert str(caught.value) == (  # the URL the user gave, not the cache folder
        f"{url}: sample 'sub0' was evicted from its cache before it could be read, 3 times; "
        "give a cache_limit that holds one volume for each reading thread"
    )


def test_a_volume_file_removed_from_a_dataset_is_named_not_read_as_zeros(tmp_path):
    from medshard.errors import CorruptDataError
    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
    from tests.volume_data import nifti_subjects

    options = dict(table=nifti_subjects(tmp_path / "raw", n=2), modalities=("t1", "t2"))
    options |= dict(mask_col="seg", key_col="subject", val_fraction=0.0, workers=1)
    ingest_nifti(NiftiIngestOptions(out=tmp_path / "ds", processes=False, quiet=True, **options))
    (shard,) = [p for p in (tmp_path / "ds/zarr/sub0/labels/mask/c").rglob("*") if p.is_file()]
    shard.unlink()
    spec = dict(SPEC, patch_size=(8, 8, 8), training=False)
    with pytest.raises(CorruptDataError, match=f"{shard} is missing; the dataset was changed"):
        list(build_loader(tmp_path / "ds", "train", **spec))


def test_byte_ranges_are_fetched_ahead_into_memory_and_read_from_there(images, tmp_path):
    ds = open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=small_cache(images.local))
    assert not ds.mirror.whole("train")  # a split read by byte range
    loader = build_loader(ds, "train", **SPEC)
    source, first = loader.source, loader.pass_batches()[0]
    mirror = source.files.mirror  # the mirror its reads go through
    assert mirror.prefetch([source.rows[int(i)] for i in first], ahead=True) == len(first)
    images.server.kill()  # what was fetched ahead is read without the server
    try:
        for index in first:
            assert source.raw(int(index))["__key__"] == source.key(int(index))  # checked
    finally:
        images.server.restart()
    assert not any(mirror._ranges._held.values())  # each range taken once
    streamed = [k for b in loader for k in b["key"]]
    assert sorted(streamed) == sorted(r["key"] for r in source.rows)
