"""benchmarks/streaming.py at the smallest scale: the engine from disk and from the
loopback S3 server (cold, warm, tight limit) on a 2D and a 3D workload, each remote row's
cache never above its limit, and the rows in the report's Markdown."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from benchmarks.machine import Runs
from benchmarks.streaming import STREAMED, loopback_s3, run_streaming, streaming_lines
from benchmarks.workloads import WORKLOADS
from medshard.synth.images import synth_mammo_tiles
from medshard.synth.volumes import synth_fomo_mri

TINY = {
    "mammo-tiles": lambda raw: synth_mammo_tiles(raw, n=12),
    "fomo-mri": lambda raw: synth_fomo_mri(raw, n=3, shape=(32, 36, 28)),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_streaming_rows_at_tiny_scale(tmp_path, name):
    workload = replace(WORKLOADS[name], batch_size=4)
    ds = tmp_path / "ds"
    table = TINY[name](tmp_path / "raw")
    workload.ingest(table, ds, 1)
    before = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    result = run_streaming(workload, table, ds, tmp_path / "work", Runs(1, 0, 0.0))
    assert {k: os.environ.get(k) for k in before} == before  # credentials put back
    for key in ("local", "cold", "warm", "tight"):
        assert result[key]["samples_per_s"] > 0
    for key in ("cold", "warm", "tight"):
        assert 0 < result[key]["cache_peak_mb"] <= result[key]["cache_limit_mb"]
    assert result["server_mb_per_s"] > 0 and result["fetch_mb_per_s"] > 0
    assert result["layout"]["shuffle_shards"] == STREAMED[name]["shuffle_shards"]
    loader = workload.engine(ds, True)
    assert result["epoch_samples"] == sum(len(batch["image"]) for batch in loader)
    assert 0 < result["epoch_fetch_mb"] <= result["dataset_mb"]
    assert not any((tmp_path / "work").glob("cache-*"))  # the caches are removed
    assert not (tmp_path / "work" / "ds-streamed").exists()
    lines = streaming_lines({"workloads": [{"name": name, "streaming": result}]})
    assert f"| {name} | remote, warm cache |" in "\n".join(lines)
    assert "disk use stayed within every limit" in lines[-1]


def test_the_report_has_no_streaming_table_without_streaming_runs():
    assert streaming_lines({"workloads": [{"name": "embryo-stage"}]}) == []


def test_the_loopback_server_is_gone_after_its_block():
    import boto3
    import botocore.exceptions

    with loopback_s3() as endpoint:
        assert "medshard-bench" in [
            b["Name"] for b in boto3.client("s3", endpoint_url=endpoint).list_buckets()["Buckets"]
        ]
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        client.list_buckets()


def test_the_report_gives_each_remote_row_as_a_share_of_local_and_flags_a_limit_passed():
    from benchmarks.report import markdown_table
    from tests.bench.test_report import figures, results

    def remote(rate: float, peak: float) -> dict:
        return figures(rate) | {"cache_peak_mb": peak, "cache_limit_mb": 100.0}

    run = results()
    run["workloads"][0]["streaming"] = {
        "dataset_mb": 80.0,
        "server_mb_per_s": 100.0,
        "fetch_mb_per_s": 32.0,
        "fetch_threads": 4,
        "epoch_samples": 800,
        "epoch_fetch_mb": 80.0,
        "least_limit_mb": 30.0,
        "local": figures(400.0),
        "cold": remote(340.0, 90.0),
        "warm": remote(390.0, 90.0),
        "tight": remote(100.0, 120.0),
    }
    text = markdown_table(run)
    assert "| fomo-mri | remote, cold cache | 340.0 | 85% | 0.10 | 90 | 100 |" in text
    assert "| fomo-mri | remote, warm cache | 390.0 | 98% |" in text
    assert "disk use passed the limit in: tight." in text
    # 800 samples at 400/s: a 2 s local epoch; 80 MB at 100 MB/s: 0.8 s of transfer, at
    # 32 MB/s: 2.5 s of fetching
    assert (
        "0.80 s of transfer alone, 2.50 s of fetching, against a local epoch of 2.00 s. So a "
        "cold epoch reaches at most 100% of local by transfer, 80% by fetching (wholly "
        "overlapped with reading); the engine's reached 85%." in text
    )
    run["workloads"][0]["streaming"]["server_mb_per_s"] = 20.0  # 4 s of transfer: half
    assert "reaches at most 50% of local by transfer" in markdown_table(run)
