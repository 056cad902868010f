import pytest

from medshard.shards.layout import index_name
from medshard.shards.manifest import read_manifest, write_manifest
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from tests.conftest import ingest, make_image_table


@pytest.fixture
def dataset(tmp_path):
    table = make_image_table(tmp_path / "raw", n=12)
    ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.0, shard_samples=6)
    return tmp_path / "ds"


def test_a_fresh_dataset_verifies(dataset):
    report = verify_dataset(dataset)
    assert report.ok and report.samples == 12 and report.shards == 2


def test_a_changed_byte_is_found(dataset):
    shard = dataset / open_dataset(dataset).card.shards[1].path
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # inside the first image
    shard.write_bytes(bytes(data))
    problems = verify_dataset(dataset).problems
    assert any("checksum differs from the card" in p for p in problems)
    assert any("image bytes differ from the source checksum" in p for p in problems)


def test_a_truncated_shard_is_found(dataset):
    shard = dataset / open_dataset(dataset).card.shards[0].path
    shard.write_bytes(shard.read_bytes()[:3000])
    assert any("truncated or corrupt" in p for p in verify_dataset(dataset).problems)


def test_a_missing_shard_and_its_keys_are_found(dataset):
    path = open_dataset(dataset).card.shards[0].path
    (dataset / path).unlink()
    problems = verify_dataset(dataset).problems
    assert f"{path}: shard file is missing" in problems
    assert any("from the manifest is missing" in p for p in problems)


def test_a_stale_index_is_found(dataset):
    path = open_dataset(dataset).card.shards[0].path
    idx = dataset / index_name(path)
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    assert f"{index_name(path)}: index does not match the shard" in verify_dataset(dataset).problems


def test_a_manifest_that_disagrees_is_found(dataset):
    rows = read_manifest(dataset).to_pylist()
    rows[0]["members"] = ["image.png"]
    rows[1]["offset"] += 512
    write_manifest(dataset, rows[:-1])
    problems = verify_dataset(dataset).problems
    assert any("has members" in p for p in problems)
    assert any("is not where the manifest puts it" in p for p in problems)
    assert any("is not in the manifest" in p for p in problems)
