import json

import pytest

from medshard.errors import CorruptDataError
from medshard.shards.checksums import MISMATCH, checked_files, file_sha256
from medshard.shards.layout import CARD_NAME, MANIFEST_NAME, index_name
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from tests.shards.conftest import flip_byte

# 40 positions spread over the file, first and last byte included
FLIPS = 40


def spread(size: int, count: int = FLIPS) -> list[int]:
    return sorted({round(i * (size - 1) / (count - 1)) for i in range(count)})


def test_the_card_records_the_sha256_of_every_file_but_the_shards(real_volumes):
    card = open_dataset(real_volumes).card
    names = set(card.checksums)
    assert {MANIFEST_NAME, "foreground.parquet", index_name(card.shards[0].path)} <= names
    assert {"zarr/zarr.json", "zarr/anatomical/image/zarr.json"} <= names
    assert "zarr/anatomical/labels/mask/zarr.json" in names
    assert not any(name.endswith(".tar") or "/c/" in name for name in names)
    assert all(card.checksums[n] == file_sha256(real_volumes / n) for n in names)
    assert sorted(names) == sorted(checked_files(real_volumes, [s.path for s in card.shards]))


def test_every_byte_flipped_in_the_manifest_is_caught_in_one_sentence(real_images):
    manifest = real_images / MANIFEST_NAME
    original = manifest.read_bytes()
    expected = f"{manifest}: {MISMATCH}"
    positions = spread(len(original))
    assert len(positions) == FLIPS
    for position in positions:
        flip_byte(manifest, position)
        assert verify_dataset(real_images).problems == [expected], position
        with pytest.raises(CorruptDataError) as caught:
            open_dataset(real_images)
        assert str(caught.value) == expected
        manifest.write_bytes(original)
    assert verify_dataset(real_images).ok


@pytest.mark.parametrize(
    "name",
    [
        "foreground.parquet",
        "wds/train-000000.idx",
        "zarr/zarr.json",
        "zarr/anatomical/image/zarr.json",
        "zarr/standard/labels/mask/zarr.json",
    ],
)
def test_a_byte_flipped_in_any_file_of_the_card_is_named(real_volumes, name):
    path = real_volumes / name
    flip_byte(path, path.stat().st_size // 2)
    assert f"{path}: {MISMATCH}" in verify_dataset(real_volumes).problems


def test_a_removed_file_of_the_card_is_named(real_volumes):
    (real_volumes / "foreground.parquet").unlink()
    assert (
        f"{real_volumes / 'foreground.parquet'}: file not found"
        in verify_dataset(real_volumes).problems
    )


def test_a_card_written_before_checksums_still_opens_and_verifies(real_images):
    card = real_images / CARD_NAME
    raw = json.loads(card.read_text())
    del raw["checksums"], raw["card_sha256"]  # as a card written before either
    card.write_text(json.dumps(raw))
    flip_byte(real_images / index_name(raw["shards"][0]["path"]), 0)  # no checksum to say so
    ds = open_dataset(real_images)
    assert ds.card.checksums is None and len(ds.manifest) == 7
    problems = verify_dataset(real_images).problems
    assert not any(MISMATCH in p for p in problems)
    assert any("not a DALI webdataset index" in p for p in problems)


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/hostname"])
def test_a_card_that_lists_a_file_outside_the_dataset_is_refused(real_images, name):
    card = real_images / CARD_NAME
    raw = json.loads(card.read_text())
    raw["checksums"][name] = "0" * 64
    del raw["card_sha256"]  # an edit that also dropped the card's own checksum
    card.write_text(json.dumps(raw))
    assert f"{card}: the card lists {name!r}, outside the dataset" in (
        verify_dataset(real_images).problems
    )


def test_an_edited_zarr_array_metadata_never_serves_voxels(tmp_path):
    from medshard.errors import CorruptDataError
    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
    from medshard.loaders import build_loader
    from tests.real_data import real_nifti_table

    table = real_nifti_table(tmp_path / "raw", names=("anatomical", "reoriented"))
    options = dict(modalities=("image",), mask_col="seg", key_col="subject", val_fraction=0.0)
    ingest_nifti(
        NiftiIngestOptions(
            table=table, out=tmp_path / "ds", workers=1, processes=False, quiet=True, **options
        )
    )
    meta = tmp_path / "ds" / "zarr" / "anatomical" / "image" / "zarr.json"
    meta.write_text(meta.read_text().replace('"int16"', '"uint16"'))
    loader = build_loader(
        tmp_path / "ds",
        "train",
        batch_size=2,
        patch_size=(8, 8, 8),
        num_workers=0,
        backend="torch",
        device="cpu",
    )
    with pytest.raises(CorruptDataError, match=r"anatomical/image/zarr\.json: checksum mismatch"):
        for _ in loader:
            pass
