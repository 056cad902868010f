import pytest

from medshard.errors import CorruptDataError
from medshard.shards.manifest import read_manifest
from medshard.shards.random_access import ShardFiles
from tests.shards.conftest import flip_byte


def stored_rows(dataset) -> list[dict]:
    return [r for r in read_manifest(dataset).to_pylist() if r["shard"]]


def read(files: ShardFiles, row: dict, checked: bool = True) -> dict:
    digest = row["sample_sha256"] if checked else None
    return files.read(row["shard"], row["offset"], row["bytes"], row["key"], digest)


def test_every_stored_crop_reads_back_against_its_checksum(real_volumes):
    rows = stored_rows(real_volumes)
    assert len(rows) == 60 and all(len(r["sample_sha256"]) == 64 for r in rows)
    files = ShardFiles(real_volumes)
    samples = [read(files, row) for row in rows]
    files.close()
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows]


def test_a_flipped_byte_in_a_crop_never_reaches_the_caller(real_volumes):
    rows = stored_rows(real_volumes)
    files = ShardFiles(real_volumes)
    clean = {row["key"]: read(files, row) for row in rows}
    files.close()
    for row in rows[::6]:  # headers, payloads and padding of 10 crops spread over the shard
        position = row["offset"] + (row["offset"] // 7) % row["bytes"]
        flip_byte(real_volumes / row["shard"], position)
        files = ShardFiles(real_volumes)
        with pytest.raises(CorruptDataError) as caught:
            read(files, row)
        assert str(caught.value) == (
            f"{real_volumes / row['shard']}: sample {row['key']!r}: checksum mismatch: "
            "the shard is damaged or was changed after ingest"
        )
        neighbour = rows[(rows.index(row) + 1) % len(rows)]
        got = read(files, neighbour)
        assert got == clean[neighbour["key"]]
        files.close()
        flip_byte(real_volumes / row["shard"], position)  # undo


def test_a_manifest_without_sample_checksums_reads_unchecked(real_volumes):
    row = stored_rows(real_volumes)[0]
    flip_byte(real_volumes / row["shard"], row["offset"] + row["bytes"] // 3)
    files = ShardFiles(real_volumes)
    assert read(files, row, checked=False)["__key__"] == row["key"]
    files.close()
