"""What the tests of a dataset at a URL share: the URL, the bucket's objects, a cache
smaller than the dataset, a damaged object, and the command line run against the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3

from medshard.shards.reader import open_dataset
from medshard.shards.storage import S3Store
from tests.s3_server import BUCKET

URL = f"s3://{BUCKET}/embryo"
MEDSHARD = str(Path(sys.executable).with_name("medshard"))
SPEC = dict(batch_size=2, backend="torch", num_workers=0, device="cpu")


def objects(prefix: str = "embryo/") -> dict[str, int]:
    client = boto3.client("s3", endpoint_url=os.environ["MEDSHARD_S3_ENDPOINT"])
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"][len(prefix) :]: item["Size"] for item in listed}


def local_files(dataset: Path) -> dict[str, int]:
    return {
        p.relative_to(dataset).as_posix(): p.stat().st_size
        for p in dataset.rglob("*")
        if p.is_file()
    }


def small_cache(local: Path, shards: int = 2) -> int:
    """Room for the tables and `shards` of the largest shard: much less than the dataset."""
    largest = max(p.stat().st_size for p in (local / "wds").glob("*.tar"))
    tables = sum(p.stat().st_size for p in local.glob("*.parquet")) + 4096
    return tables + shards * largest


def damage(name: str, position: int, url: str = URL) -> None:
    """Invert one byte of an object in the store, as bit rot or a bad copy would."""
    store = S3Store(url)
    data = bytearray(store.get(name))
    data[position] ^= 0xFF
    store.put_bytes(name, bytes(data))


def first_sample(local: Path) -> dict:
    rows = open_dataset(local).manifest.to_pylist()
    return min((r for r in rows if r["shard"] == "wds/train-000000.tar"), key=lambda r: r["offset"])


def medshard(*args: str) -> subprocess.CompletedProcess:
    env = {
        key: os.environ[key]
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    env |= {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    env["MEDSHARD_CACHE"] = os.environ["MEDSHARD_CACHE"]
    return subprocess.run([MEDSHARD, *args], capture_output=True, text=True, timeout=300, env=env)


def nifti_twins(root: Path, url: str, subjects: int, **more) -> Path:
    """`subjects` NIfTI subjects (t1, t2 and a mask) ingested to `url` and, the same, to
    the folder `root / "local"`, which is returned; `more`: further ingest options."""
    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
    from tests.volume_data import nifti_subjects

    options = dict(
        table=nifti_subjects(root / "raw", n=subjects),
        modalities=("t1", "t2"),
        mask_col="seg",
        key_col="subject",
        val_fraction=0.0,
        workers=1,
        processes=False,
        quiet=True,
        **more,
    )
    for out in (Path(url), root / "local"):
        ingest_nifti(NiftiIngestOptions(out=out, **options))
    return root / "local"
