import hashlib
import json

import numpy as np
import pytest

from medshard.codecs import decode_image
from medshard.errors import BadInputError
from medshard.shards.reader import open_dataset
from medshard.shards.verify import verify_dataset
from tests.conftest import CLASSES, IMAGE_KINDS, ingest, make_image_table, write_image, write_table
from tests.real_data import mixed_tile_table


@pytest.mark.parametrize("kind", sorted(IMAGE_KINDS))
def test_round_trip_keeps_bytes_pixels_and_labels(tmp_path, kind):
    table = make_image_table(tmp_path / "raw", kind=kind, n=9, groups=9)
    result = ingest(table, tmp_path / "ds", label_col="stage", classes=CLASSES, val_fraction=0.0)
    ds = open_dataset(tmp_path / "ds")
    assert result.samples == 9 and ds.card.task == "classification"
    rows = {r["key"]: r for r in ds.manifest.to_pylist()}
    suffix, dtype, channels = IMAGE_KINDS[kind]
    ext = {".png": "png", ".jpg": "jpg", ".tif": "tif"}[suffix]
    seen = 0
    for sample in ds.samples("train"):
        key = sample["__key__"]
        i = int(key.split("_")[-1])
        source = tmp_path / "raw" / f"images/img_{i:03d}{suffix}"
        assert sample[f"image.{ext}"] == source.read_bytes()  # stored unchanged
        pixels = decode_image(sample[f"image.{ext}"], ext)
        assert pixels.dtype == dtype
        if ext != "jpg":  # lossless formats give back the very pixels written
            assert np.array_equal(
                pixels, write_image(tmp_path / "again" / source.name, kind, seed=i)
            )
        assert int(sample["cls"]) == CLASSES.index(CLASSES[i % 3]) == rows[key]["label"]
        assert json.loads(sample["json"])["label_name"] == CLASSES[i % 3]
        assert rows[key]["shape"][0] == channels and rows[key]["dtype"] == np.dtype(dtype).name
        assert rows[key]["source_sha256"] == [hashlib.sha256(source.read_bytes()).hexdigest()]
        seen += 1
    assert seen == 9
    assert verify_dataset(tmp_path / "ds").ok


def test_multilabel_and_regression_targets(tmp_path, image_table):
    ingest(image_table, tmp_path / "ml", label_cols=("a", "b"), val_fraction=0.0)
    ingest(image_table, tmp_path / "reg", target_col="score", val_fraction=0.0)
    ml, reg = open_dataset(tmp_path / "ml"), open_dataset(tmp_path / "reg")
    assert ml.card.task == "multilabel" and ml.card.label_names == ["a", "b"]
    assert reg.card.task == "regression" and reg.card.target_name == "score"
    for sample in ml.samples("train"):
        i = int(sample["__key__"].split("_")[-1])
        assert json.loads(sample["json"])["labels"] == [i % 2, (i // 2) % 2]
        assert "cls" not in sample and "labels.npy" in sample
    targets = {r["key"]: r["target"] for r in reg.manifest.to_pylist()}
    assert targets["images_img_007"] == pytest.approx(3.5)


def test_split_column_and_key_column_are_kept(tmp_path):
    root = tmp_path / "raw"
    rows = []
    for i in range(6):
        write_image(root / f"x{i}.png", "png8-gray", seed=i)
        rows.append([f"x{i}.png", f"case-{i}", "train" if i < 4 else "holdout", CLASSES[i % 3]])
    table = write_table(root / "t.csv", ["file", "id", "part", "stage"], rows)
    ingest(
        table, tmp_path / "ds", image_col="file", key_col="id", split_col="part", label_col="stage"
    )
    ds = open_dataset(tmp_path / "ds")
    assert ds.splits == ["train", "holdout"]
    assert [s["__key__"] for s in ds.samples("holdout")] == ["case-4", "case-5"]


def test_group_aware_split_and_folds_reach_the_manifest(tmp_path, image_table):
    ingest(
        image_table,
        tmp_path / "ds",
        label_col="stage",
        group_col="embryo_id",
        val_fraction=0.25,
        folds=3,
    )
    rows = open_dataset(tmp_path / "ds").manifest.to_pylist()
    by_group = {}
    for row in rows:
        by_group.setdefault(row["subject"], set()).add((row["split"], row["fold"]))
    assert all(len(v) == 1 for v in by_group.values())
    assert {r["split"] for r in rows} == {"train", "val"}
    assert {r["fold"] for r in rows} == {0, 1, 2}


def test_rerun_is_byte_identical_and_a_no_op(tmp_path, image_table):
    options = dict(label_col="stage", group_col="embryo_id", shard_samples=5)
    first = ingest(image_table, tmp_path / "one", **options)
    ingest(image_table, tmp_path / "two", **options)
    shards = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one/wds").iterdir())
    assert len(shards) == 2 * len(first.card.shards) > 2  # .tar and .idx each
    for shard in shards:
        assert (tmp_path / "one" / shard).read_bytes() == (tmp_path / "two" / shard).read_bytes()
    assert (tmp_path / "one/manifest.parquet").read_bytes() == (
        tmp_path / "two/manifest.parquet"
    ).read_bytes()
    card_before = (tmp_path / "one/medshard.json").stat().st_mtime_ns
    again = ingest(image_table, tmp_path / "one", **options)
    assert again.up_to_date
    assert (tmp_path / "one/medshard.json").stat().st_mtime_ns == card_before


def test_overwrite_rebuilds_with_new_options(tmp_path, image_table):
    ingest(image_table, tmp_path / "ds", label_col="stage")
    ingest(image_table, tmp_path / "ds", target_col="score", overwrite=True)
    assert open_dataset(tmp_path / "ds").card.task == "regression"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_shard_limits_cut_shards(tmp_path, image_table):
    result = ingest(image_table, tmp_path / "ds", val_fraction=0.0, shard_samples=10)
    assert [s.samples for s in result.card.shards] == [10, 10, 4]
    small = ingest(image_table, tmp_path / "ds2", val_fraction=0.0, shard_bytes=4000)
    assert len(small.card.shards) > 3 and verify_dataset(tmp_path / "ds2").ok


def test_intensity_statistics_match_numpy_in_units_of_the_bit_depth(tmp_path):
    table = make_image_table(tmp_path / "raw", kind="png16-gray", n=5, groups=5)
    result = ingest(table, tmp_path / "ds", val_fraction=0.0)
    pixels = (
        np.stack([write_image(tmp_path / "x.png", "png16-gray", seed=i) for i in range(5)]).astype(
            float
        )
        / 65535
    )
    assert result.card.stats.mean[0] == pytest.approx(pixels.mean())
    assert result.card.stats.std[0] == pytest.approx(pixels.std())
    assert result.card.stats.max[0] == pixels.max()


def test_ingest_on_a_local_cluster_with_two_worker_processes(tmp_path, image_table):
    result = ingest(
        image_table, tmp_path / "ds", label_col="stage", workers=2, processes=True, shard_samples=6
    )
    assert result.samples == 24 and len(result.card.shards) >= 4
    assert verify_dataset(tmp_path / "ds").ok
    reference = ingest(image_table, tmp_path / "ref", label_col="stage", shard_samples=6)
    for shard in reference.card.shards:
        assert (tmp_path / "ds" / shard.path).read_bytes() == (
            tmp_path / "ref" / shard.path
        ).read_bytes()


def test_max_pixels_refuses_larger_images_before_decoding(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    with pytest.raises(BadInputError, match=r"declares 64 x 64 = 4,096 pixels, more than .* 4,095"):
        ingest(table, tmp_path / "ds", label_col="stage", max_pixels=4095)
    assert not (tmp_path / "ds").exists()
    assert ingest(table, tmp_path / "ds", label_col="stage", max_pixels=4096).samples == 7


def test_a_table_without_label_columns_makes_a_dataset_for_self_supervision(tmp_path):
    table = mixed_tile_table(tmp_path / "raw")
    ingest(table, tmp_path / "ds", group_col="patient", val_fraction=0.3, test_fraction=0.15)
    ds = open_dataset(tmp_path / "ds")
    assert ds.card.task is None and ds.card.label_names == []
    rows = ds.manifest.to_pylist()
    assert all(r["label"] is None and r["labels"] is None and r["target"] is None for r in rows)
    splits_of = {}
    for row in rows:  # whole patients in one split: --group-col still applies
        splits_of.setdefault(row["subject"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert {"train", "val", "test"} <= set(ds.splits)
    for sample in ds.samples("train"):
        assert "cls" not in sample and "labels.npy" not in sample
    assert verify_dataset(tmp_path / "ds").ok


def test_the_command_line_ingests_images_without_labels(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    table = mixed_tile_table(tmp_path / "raw", copies=1)
    medshard = str(Path(sys.executable).with_name("medshard"))
    result = subprocess.run(
        [medshard, "ingest", "images", str(table), "--out", str(tmp_path / "ds")]
        + ["--image-col", "image_path", "--group-col", "patient", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert open_dataset(tmp_path / "ds").card.task is None
