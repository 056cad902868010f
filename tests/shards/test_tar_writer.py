import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from medshard.shards.reader import iter_tar_samples
from medshard.shards.tar_writer import TarShardWriter
from medshard.shards.verify import read_dali_index

SAMPLES = [
    ("a-001", [("image.png", b"\x89PNG" + bytes(range(256)) * 3), ("cls", b"2")]),
    ("b_002", [("image.jpg", b"\xff\xd8" + b"x" * 511), ("cls", b"0"), ("json", b"{}")]),
    ("c", [("image.npy", b""), ("json", b'{"k": 1}')]),
]


def write(dataset: Path, name: str = "wds/train-000000.tar") -> Path:
    with TarShardWriter(dataset, name) as writer:
        for key, members in SAMPLES:
            writer.add(key, members)
    return dataset / name


def test_round_trip_members_and_order(tmp_path):
    shard = write(tmp_path)
    got = [
        (s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")})
        for s in iter_tar_samples(shard)
    ]
    assert got == [(key, dict(members)) for key, members in SAMPLES]


def test_tar_is_readable_by_tarfile_with_fixed_metadata(tmp_path):
    shard = write(tmp_path)
    with tarfile.open(shard) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos][:2] == ["a-001.image.png", "a-001.cls"]
    assert {(i.mtime, i.uid, i.gid, i.mode) for i in infos} == {(946684800, 0, 0, 0o644)}


def test_index_equals_dalis_own_wds2idx(tmp_path):
    shard = write(tmp_path)
    reference = tmp_path / "reference.idx"
    wds2idx = Path(sys.executable).with_name("wds2idx")
    subprocess.run([str(wds2idx), str(shard), str(reference)], check=True, capture_output=True)
    assert (tmp_path / "wds/train-000000.idx").read_text() == reference.read_text()
    assert len(read_dali_index(reference)) == len(SAMPLES)


def test_same_input_gives_byte_identical_shards(tmp_path):
    first = write(tmp_path / "one").read_bytes()
    second = write(tmp_path / "two").read_bytes()
    assert first == second


def test_locations_point_at_each_sample(tmp_path):
    with TarShardWriter(tmp_path, "wds/x-000000.tar") as writer:
        locations = [writer.add(key, members) for key, members in SAMPLES]
    with tarfile.open(tmp_path / "wds/x-000000.tar") as tar:
        first_headers = {}
        for info in tar:
            first_headers.setdefault(info.name.split(".")[0], info.offset)
    assert [loc.offset for loc in locations] == [first_headers[k] for k, _ in SAMPLES]
    assert locations[1].offset == locations[0].offset + locations[0].bytes


def test_each_location_carries_the_sha256_of_the_samples_bytes(tmp_path):
    with TarShardWriter(tmp_path, "wds/x-000000.tar") as writer:
        locations = [writer.add(key, members) for key, members in SAMPLES]
    data = (tmp_path / "wds/x-000000.tar").read_bytes()
    for loc in locations:
        assert loc.sha256 == hashlib.sha256(data[loc.offset : loc.offset + loc.bytes]).hexdigest()
    assert len({loc.sha256 for loc in locations}) == len(SAMPLES)


def test_failure_inside_the_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), TarShardWriter(tmp_path, "wds/y-000000.tar") as writer:
        writer.add("ok", [("cls", b"1")])
        raise RuntimeError("boom")
    assert list((tmp_path / "wds").iterdir()) == []


@pytest.mark.parametrize("key", ["has.dot", "has space", "", "k" * 81])
def test_invalid_keys_are_refused(tmp_path, key):
    writer = TarShardWriter(tmp_path, "wds/z-000000.tar")
    with pytest.raises(ValueError, match="invalid sample key"):
        writer.add(key, [("cls", b"1")])
    writer.abort()
