import pytest

from medshard.shards.checksums import MISMATCH
from medshard.shards.layout import MANIFEST_NAME, index_name
from medshard.shards.manifest import read_manifest, write_manifest
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from tests.conftest import ingest, make_image_table
from tests.shards.conftest import flip_byte, reseal


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
    key = open_dataset(dataset).manifest.to_pylist()[6]["key"]  # the second shard's first
    assert f"{shard}: sample {key!r}: checksum mismatch: " in " ".join(problems)


def test_a_truncated_shard_is_found(dataset):
    shard = dataset / open_dataset(dataset).card.shards[0].path
    shard.write_bytes(shard.read_bytes()[:3000])
    assert any("truncated or corrupt" in p for p in verify_dataset(dataset).problems)


def test_a_missing_shard_and_its_keys_are_found(dataset):
    path = open_dataset(dataset).card.shards[0].path
    (dataset / path).unlink()
    problems = verify_dataset(dataset).problems
    assert f"{dataset}/{path}: shard file is missing" in problems  # named by the folder
    assert any("from the manifest is missing" in p for p in problems)


def test_a_stale_index_is_found(dataset):
    path = open_dataset(dataset).card.shards[0].path
    idx = dataset / index_name(path)
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    problems = verify_dataset(dataset).problems
    assert f"{dataset}/{index_name(path)}: index does not match the shard" in problems


def test_a_manifest_that_disagrees_is_found(dataset):
    rows = read_manifest(dataset).to_pylist()
    rows[0]["members"] = ["image.png"]
    rows[1]["offset"] += 512
    write_manifest(dataset, rows[:-1])
    assert verify_dataset(dataset).problems == [f"{dataset / MANIFEST_NAME}: {MISMATCH}"]
    reseal(dataset)  # as if an ingest had written it so
    problems = verify_dataset(dataset).problems
    assert any("has members" in p for p in problems)
    assert any("is not where the manifest puts it" in p for p in problems)
    assert any("is not in the manifest" in p for p in problems)


def test_keys_that_appear_in_more_than_one_row_are_named(real_volumes):
    rows = read_manifest(real_volumes).to_pylist()
    volume = next(r for r in rows if r["key"] == "standard")
    crop = next(r for r in rows if r["shard"])
    write_manifest(real_volumes, [*rows, {**volume, "source": ["other.nii"]}, crop])
    reseal(real_volumes)
    problems = verify_dataset(real_volumes).problems
    assert problems == [
        f"{MANIFEST_NAME}: keys appear in more than one row: {crop['key']!r}, 'standard'"
    ]


@pytest.mark.parametrize(
    "content, reason",
    [
        (
            b"v1.2 1\nimage.png 512 \xff\xfe x.image.png\n",
            "not a DALI webdataset index (it is not UTF-8 text)",
        ),
        (
            "v1.2 1\nimage.png 512 9 \u00e9.image.png\n".encode("latin-1"),
            "not a DALI webdataset index (it is not UTF-8 text)",
        ),
        (b"v1.2 x\n", "not a DALI webdataset index (v1.2)"),
        (b"", "not a DALI webdataset index (v1.2)"),
        (b"v1.2 1\nimage.png 512 nine x.image.png\n", "malformed index line 2: "),
    ],
)
def test_an_index_that_is_not_a_dali_index_is_named(real_images, content, reason):
    shard = open_dataset(real_images).card.shards[0].path
    index = real_images / index_name(shard)
    index.write_bytes(content)
    problems = verify_dataset(real_images).problems
    assert f"{index}: {MISMATCH}" in problems
    assert any(p.startswith(f"{index}: {reason}") for p in problems)


def test_a_damaged_crop_is_named_by_its_key(real_volumes):
    row = next(r for r in read_manifest(real_volumes).to_pylist() if r["shard"])
    flip_byte(real_volumes / row["shard"], row["offset"] + row["bytes"] // 2)
    problems = verify_dataset(real_volumes).problems
    shard = real_volumes / row["shard"]
    assert f"{shard}: sample {row['key']!r}: checksum mismatch: " in " ".join(problems)
    assert not any(f"sample {r!r}" in " ".join(problems) for r in ("standard", "anatomical"))
