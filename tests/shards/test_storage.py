"""URLs and the object store, against a real S3 API server on loopback: round trips,
byte ranges, one-sentence refusals naming the object, and bounded retries that hold
while the server is down."""

from __future__ import annotations

import hashlib
import logging
import pickle
import socket
import threading
from pathlib import Path

import pytest

from medshard.errors import CorruptDataError, DatasetError
from medshard.shards.storage import RetryPolicy, S3Store, is_url, normal_url, split_url
from tests.s3_server import BUCKET, s3  # noqa: F401

URL = f"s3://{BUCKET}/data/set"
QUICK = RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.02)


def test_urls_are_told_from_paths_also_as_pathlib_folds_them():
    assert is_url("s3://b/k") and is_url(Path("s3://b/k")) and is_url("gs://b")
    assert not is_url("data/s3/x") and not is_url("/tmp/ds") and not is_url("C:/x")
    assert normal_url(Path("s3://bucket/a/b/")) == "s3://bucket/a/b"
    assert split_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split_url("s3://bucket") == ("bucket", "")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "gs://bucket/x",
            "reads local paths and s3:// URLs (S3 and S3-compatible stores), not gs://",
        ),
        ("s3:///x", "the URL names no bucket (write s3://BUCKET/PREFIX)"),
    ],
)
def test_other_urls_are_refused_in_one_sentence(url, reason):
    with pytest.raises(DatasetError) as caught:
        split_url(url)
    assert str(caught.value).endswith(reason)


def test_objects_round_trip_whole_by_range_listed_and_deleted(s3, tmp_path):  # noqa: F811
    store = S3Store(URL)
    data = bytes(range(256)) * 40
    store.put_bytes("wds/a.tar", data)
    (tmp_path / "b").write_bytes(b"bee" * 1000)
    store.put_file("zarr/k/zarr.json", tmp_path / "b", "0" * 64)
    assert store.get("wds/a.tar") == data
    assert store.get_range("wds/a.tar", 1000, 300) == data[1000:1300]
    assert store.get_range("wds/a.tar", len(data) - 5, 100) == data[-5:]
    assert store.head("zarr/k/zarr.json") == (3000, "0" * 64)
    assert store.head("missing") is None
    assert store.list() == {"wds/a.tar": len(data), "zarr/k/zarr.json": 3000}
    assert store.list("zarr/") == {"zarr/k/zarr.json": 3000}
    store.delete(["wds/a.tar"])
    assert list(store.list()) == ["zarr/k/zarr.json"]


def test_a_prefix_is_not_a_prefix_of_its_neighbour(s3):  # noqa: F811
    S3Store(f"{URL}2").put_bytes("x", b"1")
    assert S3Store(URL).list() == {}


def test_a_download_is_checked_against_its_checksum(s3, tmp_path):  # noqa: F811
    store = S3Store(URL)
    store.put_bytes("m.parquet", b"table")
    with pytest.raises(CorruptDataError) as caught:
        store.download("m.parquet", tmp_path / "m", hashlib.sha256(b"tablE").hexdigest())
    assert str(caught.value) == (
        f"{URL}/m.parquet: checksum mismatch: the object is damaged or was changed after ingest"
    )
    digest = hashlib.sha256(b"table").hexdigest()
    assert store.download("m.parquet", tmp_path / "m", digest) == digest


def test_a_missing_object_or_bucket_is_refused_at_once_naming_it(s3):  # noqa: F811
    with pytest.raises(DatasetError) as caught:
        S3Store(URL, retry=RetryPolicy(attempts=50, first_delay=5)).get("wds/none.tar")
    assert str(caught.value) == f"{URL}/wds/none.tar: no such object"
    with pytest.raises(DatasetError) as caught:
        S3Store("s3://no-such-bucket/x").get("medshard.json")
    assert str(caught.value) == "s3://no-such-bucket/x/medshard.json: no such bucket"


def test_missing_credentials_are_refused_at_once(s3, monkeypatch, tmp_path):  # noqa: F811
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(DatasetError) as caught:
        S3Store(URL).get("x")
    assert "no AWS credentials were found" in str(caught.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_store_that_never_answers_is_given_up_after_the_policy(monkeypatch, caplog):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3Store(URL, endpoint_url=endpoint, retry=QUICK)
    debug = caplog.at_level(logging.DEBUG, logger="medshard.shards.storage")
    with debug, pytest.raises(DatasetError) as caught:
        store.get("wds/a.tar")
    assert str(caught.value).startswith(
        f"{URL}/wds/a.tar: the object store did not answer after 3 tries (EndpointConnectionError"
    )
    retries = [r.levelno for r in caplog.records if "retry" in r.getMessage()]
    assert retries == [logging.WARNING, logging.DEBUG]  # two retries, one line shown


def test_retries_hold_while_the_server_is_restarted(s3, caplog):  # noqa: F811
    store = S3Store(URL, retry=RetryPolicy(attempts=12, first_delay=0.05, max_delay=1.0))
    store.put_bytes("wds/a.tar", b"payload")
    s3.kill()
    with pytest.raises(DatasetError):  # down: a policy of one try gives up
        S3Store(URL, retry=RetryPolicy(attempts=1)).get("wds/a.tar")
    restart = threading.Timer(0.3, s3.restart)
    restart.start()
    with caplog.at_level(logging.DEBUG, logger="medshard.shards.storage"):
        assert store.get("wds/a.tar") == b"payload"
    restart.join()
    retries = [r for r in caplog.records if "; retry " in r.getMessage()]
    assert len(retries) > 1  # the restart took more than one retry
    # one line when the request starts failing; the rest only at debug level
    assert [r.levelno for r in retries] == [logging.WARNING] + [logging.DEBUG] * (len(retries) - 1)
    assert "retry 1 of 11" in retries[0].getMessage()


def test_a_store_crosses_into_another_process_without_its_client(s3):  # noqa: F811
    store = S3Store(URL)
    store.put_bytes("a", b"1")
    copy = pickle.loads(pickle.dumps(store))
    assert copy._client is None and copy.get("a") == b"1"
