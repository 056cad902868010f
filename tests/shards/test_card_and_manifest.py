import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medshard.errors import DatasetError, FormatVersionError
from medshard.shards.card import DatasetCard, SplitCounts, read_card, write_card
from medshard.shards.manifest import MANIFEST_SCHEMA, read_manifest, write_manifest


def card() -> DatasetCard:
    return DatasetCard(
        kind="images",
        task="classification",
        fields=["image.png", "cls"],
        label_names=["a", "b"],
        counts={"train": SplitCounts(samples=1)},
        fingerprint="f" * 64,
        created_by="medshard test",
    )


ROW = {
    "key": "k1",
    "split": "train",
    "fold": -1,
    "subject": "s",
    "label": 1,
    "labels": None,
    "target": None,
    "source": ["x.png"],
    "source_sha256": ["0" * 64],
    "shape": [1, 4, 4],
    "dtype": "uint8",
    "spacing": None,
    "fps": None,
    "timestamps": None,
    "shard": "wds/train-000000.tar",
    "offset": 0,
    "members": ["image.png", "cls"],
    "zarr_path": None,
    "bytes": 1536,
}


def test_card_round_trip(tmp_path):
    write_card(tmp_path, card())
    assert read_card(tmp_path) == card()


def test_unknown_card_version_is_refused_with_the_versions_read(tmp_path):
    write_card(tmp_path, card())
    raw = json.loads((tmp_path / "medshard.json").read_text())
    raw["format_version"] = 99
    (tmp_path / "medshard.json").write_text(json.dumps(raw))
    with pytest.raises(
        FormatVersionError, match=r"format version 99 is not supported.*reads format versions 1"
    ):
        read_card(tmp_path)


def test_directory_without_card_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="not a medshard dataset"):
        read_card(tmp_path)


def test_manifest_round_trip_keeps_schema_and_version(tmp_path):
    write_manifest(tmp_path, [ROW])
    table = read_manifest(tmp_path)
    assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=True)
    assert table.to_pylist() == [ROW]


def test_manifest_of_unknown_version_is_refused(tmp_path):
    table = pa.Table.from_pylist([ROW], schema=MANIFEST_SCHEMA)
    table = table.replace_schema_metadata({b"medshard.format_version": b"7"})
    pq.write_table(table, tmp_path / "manifest.parquet")
    with pytest.raises(FormatVersionError, match="reads format versions 1"):
        read_manifest(tmp_path)
