"""Reading a dataset at a URL on the loopback S3 server (tests/s3_server.py): stream every
sample through a cache smaller than the dataset, survive the server's restart mid-epoch,
give two ranks each sample exactly once, and verify and inspect it."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from medshard.errors import CorruptDataError, DatasetError
from medshard.loaders.build import build_loader
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from tests.s3.helpers import (
    URL,
    damage,
    first_sample,
    local_files,
    medshard,
    nifti_twins,
    small_cache,
)
from tests.s3_server import BUCKET


def dataset_bytes(dataset: Path) -> int:
    return sum(local_files(dataset).values())


def test_a_cache_limit_smaller_than_a_shard_is_refused_in_one_sentence(images, tmp_path):
    with pytest.raises(DatasetError) as caught:
        open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=2000)
    message = str(caught.value)
    assert message.startswith(f"{URL}: a cache_limit of 2.0 kB cannot hold shard wds/")
    assert "beside the dataset's tables" in message and "give a cache_limit of at least" in message
    with pytest.raises(DatasetError, match="cache_limit 'lots' is not a size"):
        open_dataset(URL, cache_dir=tmp_path / "c", cache_limit="lots")
    with pytest.raises(DatasetError, match="cache_limit True is not a size"):  # not 1 byte
        open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=True)


def test_not_a_dataset_at_a_url(s3):
    with pytest.raises(DatasetError) as caught:
        open_dataset(f"s3://{BUCKET}/nothing")
    assert str(caught.value) == f"s3://{BUCKET}/nothing: not a medshard dataset (no medshard.json)"


def keys_of(loader, epoch: int = 0) -> list[str]:
    loader.set_epoch(epoch)
    return [key for batch in loader for key in batch["key"]]


def test_every_sample_streams_through_a_cache_smaller_than_the_dataset(images, tmp_path):
    local = images.local
    limit = small_cache(local)
    assert limit < dataset_bytes(local)
    ds = open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=limit)
    assert not ds.mirror.whole("train")  # shuffled reads by byte range
    spec = dict(batch_size=3, backend="torch", shuffle=True, uneven="uneven", device="cpu")
    loader = build_loader(ds, "train", num_workers=2, **spec)
    here = build_loader(open_dataset(local), "train", num_workers=0, **spec)
    streamed = {k: i for b in loader for k, i in zip(b["key"], b["image"])}
    stored = {k: i for b in here for k, i in zip(b["key"], b["image"])}
    assert sorted(streamed) == sorted(stored) and len(streamed) == ds.card.counts["train"].samples
    assert all(torch.equal(streamed[k], stored[k]) for k in stored)
    assert ds.mirror.cache.usage() <= limit
    model = torch.nn.Linear(1, 3)  # a few training steps on streamed batches
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = 0
    for batch in itertools.islice(build_loader(ds, "train", num_workers=0, **spec), 3):
        logits = model(batch["image"].float().mean(dim=(1, 2, 3))[:, None])
        loss = torch.nn.functional.cross_entropy(logits, batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    assert steps == 3 and torch.isfinite(loss)


@pytest.mark.parametrize("whole", [True, False])
def test_a_later_epoch_reads_members_alone_from_cached_shards_and_ranges_once(
    images, tmp_path, whole
):
    local = images.local
    limit = None if whole else small_cache(local)  # whole shards, or each sample's range
    ds = open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=limit)
    spec = dict(batch_size=3, backend="torch", shuffle=True, device="cpu", num_workers=2)
    loader = build_loader(ds, "train", **spec)
    here = build_loader(open_dataset(local), "train", **spec)
    files = loader.filler.source.files
    read, got = [], []  # bytes read from files here; ranges asked of the store
    plain_read, plain_get = files.read_range, files.mirror.store.get_range
    files.read_range = lambda *span: read.append(span[2]) or plain_read(*span)
    files.mirror.store.get_range = lambda *span: got.append(span) or plain_get(*span)
    for epoch in (0, 1):
        read[:], got[:] = [], []
        loader.set_epoch(epoch)
        here.set_epoch(epoch)
        streamed = [(k, i) for b in loader for k, i in zip(b["key"], b["image"])]
        stored = [(k, i) for b in here for k, i in zip(b["key"], b["image"])]
        assert [k for k, _ in streamed] == [k for k, _ in stored]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(streamed, stored))
    rows = loader.filler.source.rows
    if whole:  # the second epoch: each pixel member alone, from the cached shards
        members = sorted(size for _, _, size in loader.filler.members.spans.values())
        assert sorted(read) == members and sum(members) < sum(r["bytes"] for r in rows)
        assert not got
    else:  # whole samples' ranges, fetched ahead (or by a read that came first), checked
        samples = {(r["shard"], r["offset"], r["bytes"]) for r in rows}
        assert got and set(got) <= samples


def test_whole_shards_are_fetched_once_and_a_warm_cache_reads_offline(images, tmp_path):
    local = images.local
    ds = open_dataset(URL, cache_dir=tmp_path / "c")  # no limit: every split fits
    assert ds.mirror.whole("val")
    loader = build_loader(ds, "val", batch_size=2, backend="torch", num_workers=0, device="cpu")
    first = keys_of(loader)
    assert sorted(p.name for p in (ds.path / "wds").glob("val-*.tar")) == sorted(
        p.name for p in (local / "wds").glob("val-*.tar")
    )
    images.server.kill()  # the server goes away; the cache still holds the split
    assert sorted(keys_of(loader, epoch=1)) == sorted(first)
    images.server.restart()


def test_two_ranks_read_each_sample_exactly_once(images, tmp_path):
    local = images.local
    seen = []
    for rank in (0, 1):
        ds = open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=small_cache(local))
        loader = build_loader(
            ds,
            "train",
            batch_size=2,
            backend="torch",
            num_workers=0,
            device="cpu",
            shuffle=True,
            uneven="uneven",
            rank=rank,
            world_size=2,
        )
        seen.append(keys_of(loader, epoch=1))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == _train_keys(local)


def _train_keys(local: Path) -> list[str]:
    rows = open_dataset(local).manifest.to_pylist()
    return sorted(r["key"] for r in rows if r["split"] == "train")


def test_a_server_restarted_during_an_epoch_loses_no_sample(images, tmp_path, caplog):
    local, server = images.local, images.server
    ds = open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=small_cache(local))
    loader = build_loader(
        ds, "train", batch_size=2, backend="torch", num_workers=0, device="cpu", uneven="uneven"
    )
    keys, restart = [], threading.Timer(0.5, server.restart)
    # gone as the epoch's reads begin: after its first batch, the fetch ahead of the plan
    # may already hold every sample of so small a split, and no read would meet the outage
    server.kill()
    restart.start()
    with caplog.at_level(logging.WARNING, logger="medshard.shards.storage"):
        for batch in loader:
            keys += batch["key"]
    restart.join()
    assert sorted(keys) == _train_keys(local)
    assert any("retry 1 of" in r.getMessage() for r in caplog.records)


def test_verify_checks_every_object_at_the_url(images, tmp_path):
    report = verify_dataset(URL, cache_dir=tmp_path / "c")
    assert report.ok, report.problems
    assert (report.samples, report.shards) == (14, len(open_dataset(images.local).card.shards))
    row = first_sample(images.local)
    damage("wds/train-000000.tar", row["offset"] + 600)  # inside the first image's bytes
    damage("wds/val-000000.idx", 3)
    problems = verify_dataset(URL, cache_dir=tmp_path / "c").problems
    assert f"{URL}/wds/train-000000.tar: checksum differs from the card" in problems
    assert all(p.startswith(f"{URL}/") for p in problems)  # never a scratch or cache path
    assert (
        f"{URL}/wds/train-000000.tar: sample {row['key']!r}: checksum mismatch: "
        "the shard is damaged or was changed after ingest"
    ) in problems
    assert (
        f"{URL}/wds/val-000000.idx: checksum mismatch: the object is damaged or was changed "
        "after ingest"
    ) in problems
    assert not list((tmp_path / "c").glob("verify-*"))  # the scratch copies are gone


def test_a_damaged_object_never_reaches_a_batch(images, tmp_path, caplog):
    row = first_sample(images.local)
    damage("wds/train-000000.tar", row["offset"] + 600)
    expected = f"{URL}/wds/train-000000.tar: sample {row['key']!r}: checksum mismatch"
    # by byte range, or whole (where the shard's checksum fails first, and its samples are
    # then read by range, each checked): the damaged sample is named
    for limit in (small_cache(images.local), None):
        ds = open_dataset(URL, cache_dir=tmp_path / f"c{limit}", cache_limit=limit)
        loader = build_loader(ds, "train", batch_size=2, backend="torch", num_workers=0)
        with pytest.raises(CorruptDataError) as caught:
            keys_of(loader)
        assert str(caught.value).startswith(expected)
    shard = f"{URL}/wds/train-000000.tar: checksum mismatch: the object is damaged"
    assert shard in caplog.text


def test_a_damaged_manifest_is_refused_when_the_dataset_is_opened(images, tmp_path):
    damage("manifest.parquet", 10)
    with pytest.raises(CorruptDataError) as caught:
        open_dataset(URL, cache_dir=tmp_path / "c")
    assert str(caught.value) == (
        f"{URL}/manifest.parquet: checksum mismatch: the object is damaged or was changed "
        "after ingest"
    )
    assert verify_dataset(URL, cache_dir=tmp_path / "c").problems == [str(caught.value)]


def test_reading_every_shard_at_once_needs_room_for_the_split(images, tmp_path):
    ds = open_dataset(URL, cache_dir=tmp_path / "c", cache_limit=small_cache(images.local))
    with pytest.raises(DatasetError) as caught:
        ds.shard_paths("train")
    assert str(caught.value).startswith(f"{URL}: split 'train' holds ")
    assert "use backend='torch', which reads sample by sample" in str(caught.value)
    val = ds.shard_paths("val")  # a split that fits is fetched whole, with its indexes
    assert all(p.is_file() for p in val + ds.index_paths("val"))


def test_inspect_and_verify_a_url_on_the_command_line(images, tmp_path):
    endpoint = ["--endpoint-url", images.server.endpoint]
    shown = medshard("inspect", URL, *endpoint)
    assert shown.returncode == 0, shown.stderr
    assert "images" in shown.stdout and "cleavage" in shown.stdout
    assert f"{URL} (images, classification)" in shown.stdout  # the URL, not the cache folder
    assert str(tmp_path / "cache") not in shown.stdout
    checked = medshard("verify", URL, *endpoint)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{URL}: OK, 14 samples in ")
    missing = medshard("verify", f"s3://{BUCKET}/none", *endpoint)
    assert missing.returncode != 0
    assert f"s3://{BUCKET}/none: not a medshard dataset (no medshard.json)" in missing.stderr


def test_the_loader_streams_patches_of_volumes_at_a_url(s3, tmp_path, monkeypatch):
    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
    from tests.real_data import real_nifti_table

    monkeypatch.setenv("MEDSHARD_CACHE", str(tmp_path / "cache"))
    table = real_nifti_table(tmp_path / "raw", names=("anatomical", "reoriented"))
    options = dict(modalities=("image",), mask_col="seg", key_col="subject", val_fraction=0.0)
    url = f"s3://{BUCKET}/patches"
    for out in (Path(url), tmp_path / "local"):
        ingest_nifti(
            NiftiIngestOptions(
                table=table, out=out, workers=1, processes=False, quiet=True, **options
            )
        )
    spec = dict(batch_size=2, patch_size=(8, 8, 8), backend="torch", device="cpu", training=False)
    streamed = [b["image"] for b in build_loader(url, "train", num_workers=0, **spec)]
    stored = [b["image"] for b in build_loader(tmp_path / "local", "train", num_workers=0, **spec)]
    assert len(streamed) == len(stored) > 0
    assert all(torch.equal(a, b) for a, b in zip(streamed, stored))


def test_zarr_samples_are_fetched_whole_into_the_cache_and_checked(s3, tmp_path, monkeypatch):
    from medshard.shards.zarr_store import ZarrReader

    monkeypatch.setenv("MEDSHARD_CACHE", str(tmp_path / "cache"))
    url = f"s3://{BUCKET}/mri"
    nifti_twins(tmp_path, url, 3, label_col="group")
    rows = {r["key"]: r for r in open_dataset(tmp_path / "local").manifest.to_pylist()}
    group = max(r["bytes"] for r in rows.values())
    tables = sum(p.stat().st_size for p in (tmp_path / "local").glob("*.parquet"))
    limit = tables + 4096 + group  # one volume at a time
    ds = open_dataset(url, cache_dir=tmp_path / "c", cache_limit=limit)
    local, remote = ZarrReader(tmp_path / "local"), ZarrReader(ds.path)
    for key, row in rows.items():
        assert ds.prefetch([key]) == 1  # the loader's call before it reads the sample
        for array in ("image", "labels/mask"):
            path = f"{row['zarr_path']}/{array}"
            assert np.array_equal(remote.read(path), local.read(path))
        assert ds.mirror.cache.usage() <= limit
    assert len(list((ds.path / "zarr").iterdir())) == 1  # the others were evicted
    assert verify_dataset(url, cache_dir=tmp_path / "c").ok
    first = min(rows)
    damage(f"{rows[first]['zarr_path']}/image/zarr.json", 0, url)
    fresh = open_dataset(url, cache_dir=tmp_path / "c2")
    with pytest.raises(CorruptDataError) as caught:
        fresh.prefetch([first])
    assert str(caught.value) == (
        f"{url}/{rows[first]['zarr_path']}/image/zarr.json: checksum mismatch: the object is "
        "damaged or was changed after ingest"
    )
    assert not (fresh.path / rows[first]["zarr_path"]).exists()  # nothing half fetched


WORKERS_STARTED_BEFORE_THE_CREDENTIALS = """
import multiprocessing, os, sys


def main():
    import tensorstore  # noqa: F401 (the loader then starts workers from a forkserver)

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
    server = multiprocessing.get_context("forkserver")
    server.set_forkserver_preload(["medshard.loaders.build"])
    early = server.Process(target=print, args=("forkserver up",))
    early.start()
    early.join()
    os.environ.update(saved)  # the credentials arrive after the forkserver started
    from medshard.loaders import build_loader
    from medshard.shards.reader import open_dataset

    ds = open_dataset(sys.argv[1], cache_dir=sys.argv[2])
    spec = dict(batch_size=3, num_workers=2, backend="torch", device="cpu")
    print(sorted(k for batch in build_loader(ds, "train", **spec) for k in batch["key"]))


if __name__ == "__main__":
    main()
"""


def test_workers_started_before_the_credentials_still_read_the_store(images, tmp_path):
    script = tmp_path / "stream.py"
    script.write_text(WORKERS_STARTED_BEFORE_THE_CREDENTIALS)
    done = subprocess.run(
        [sys.executable, str(script), URL, str(tmp_path / "cache2")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    local = open_dataset(images.local).manifest.to_pylist()
    expected = sorted(r["key"] for r in local if r["split"] == "train")
    assert done.stdout.strip().splitlines()[-1] == str(expected)
