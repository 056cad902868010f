import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medshard.errors import DatasetError, FormatVersionError
from medshard.shards.card import ChannelStats, DatasetCard, SplitCounts, read_card, write_card
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
    "sample_sha256": "a" * 64,
}


def test_card_round_trip(tmp_path):
    written = write_card(tmp_path, card())
    own = written.card_sha256
    assert written == card().model_copy(update={"checksums": {}, "card_sha256": own})
    assert read_card(tmp_path) == written and len(own) == 64


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


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_number_is_never_written_into_the_card(tmp_path, bad):
    stats = ChannelStats(mean=[0.5, bad], std=[0.1, 0.1], min=[0.0, 0.0], max=[1.0, 1.0])
    with pytest.raises(DatasetError, match=r"field stats\.mean\[1\] is not a finite number"):
        write_card(tmp_path, card().model_copy(update={"stats": stats}))
    assert not (tmp_path / "medshard.json").exists()


def test_a_damaged_card_is_refused_in_one_sentence(tmp_path):
    write_card(tmp_path, card())
    path = tmp_path / "medshard.json"
    original = path.read_bytes()
    refused = 0
    for position in range(0, len(original), 3):
        data = bytearray(original)
        data[position] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            read_card(tmp_path)  # a flip inside a string can leave a valid card
        except DatasetError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))
            refused += 1
    assert refused > len(original) // 6


@pytest.mark.parametrize(
    "text, reason",
    [
        (b'{"format": "medshard", \xff}', "the dataset card is damaged: it is not JSON"),
        (b'["medshard"]', "the dataset card is damaged: it is not a JSON object"),
        (
            b'{"format": "medshard", "format_version": 1, "kind": "images"}',
            r"damaged or was edited",
        ),
        (b'{"format": "medshard", "format_version": 1, "kind": 7}', r"kind: Input should be"),
    ],
)
def test_a_card_that_is_not_a_card_is_refused(tmp_path, text, reason):
    (tmp_path / "medshard.json").write_bytes(text)
    with pytest.raises(DatasetError, match=reason):
        read_card(tmp_path)


def test_a_manifest_that_does_not_parse_is_refused_in_one_sentence(tmp_path):
    write_manifest(tmp_path, [ROW, {**ROW, "key": "k2"}])
    path = tmp_path / "manifest.parquet"
    original = path.read_bytes()
    refused = 0
    for position in range(0, len(original), max(1, len(original) // 40)):
        data = bytearray(original)
        data[position] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            read_manifest(tmp_path)  # without the card's checksum some flips go unseen
        except DatasetError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))
            refused += 1
    assert refused > 0


def test_a_manifest_written_before_sample_checksums_reads_them_as_null(tmp_path):
    old = pa.schema([f for f in MANIFEST_SCHEMA if f.name != "sample_sha256"])
    old = old.with_metadata(MANIFEST_SCHEMA.metadata)
    row = {k: v for k, v in ROW.items() if k != "sample_sha256"}
    pq.write_table(pa.Table.from_pylist([row], schema=old), tmp_path / "manifest.parquet")
    assert read_manifest(tmp_path).to_pylist() == [{**row, "sample_sha256": None}]


def test_an_edit_that_keeps_the_card_valid_json_is_caught(tmp_path):
    from medshard.errors import CorruptDataError
    from medshard.shards.reader import open_dataset
    from medshard.shards.verify import verify_dataset
    from tests.conftest import ingest
    from tests.real_data import mixed_tile_table

    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage")
    card = tmp_path / "ds" / "medshard.json"
    text = card.read_text()
    position = re.search(r'"std": \[\s*\d', text).end() - 1  # the first digit of a std
    digit = text[position]
    card.write_text(text[:position] + ("1" if digit != "1" else "2") + text[position + 1 :])
    with pytest.raises(
        CorruptDataError, match="medshard.json: checksum mismatch: the dataset card"
    ):
        open_dataset(tmp_path / "ds")
    with pytest.raises(CorruptDataError, match="json: checksum mismatch: the dataset card"):
        verify_dataset(tmp_path / "ds")
