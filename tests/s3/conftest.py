"""Fixtures for a dataset at a URL: the loopback S3 server (tests/s3_server.py) and a
small image dataset ingested both to a URL on it and to a directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ingest, make_image_table
from tests.s3.helpers import URL
from tests.s3_server import LoopbackS3, s3  # noqa: F401 (the fixture, shared with tests/shards)


@dataclass
class Images:
    table: Path
    local: Path  # the same ingest into a directory
    options: dict
    server: LoopbackS3


@pytest.fixture
def images(s3, tmp_path, monkeypatch) -> Images:  # noqa: F811 (the fixture imported above)
    """14 gray PNGs in shards of 3, ingested once to the URL and once to a directory."""
    monkeypatch.setenv("MEDSHARD_CACHE", str(tmp_path / "cache"))
    table = make_image_table(tmp_path / "raw", n=14)
    options = dict(label_col="stage", shard_samples=3, val_fraction=0.25)
    ingest(table, Path(URL), **options)
    ingest(table, tmp_path / "local", **options)
    return Images(table, tmp_path / "local", options, s3)
