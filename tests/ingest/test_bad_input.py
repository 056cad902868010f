"""Every input `ingest images` refuses: one clear sentence, and nothing half-written."""

from pathlib import Path

import pytest

from medshard.errors import BadInputError, DatasetError
from medshard.shards.manifest import read_rejected
from medshard.shards.reader import open_dataset
from tests.conftest import CLASSES, ingest, make_image_table, write_table


def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if ".partial-" in p.name] == []


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def rewrite_row(table: Path, row: int, column: int, value: str) -> None:
    lines = table.read_text().splitlines()
    cells = lines[row + 1].split(",")
    cells[column] = value
    lines[row + 1] = ",".join(cells)
    table.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda t: (t.parent / "images/img_004.png").unlink(),
            r"img_004\.png: file not found \(.*row 5\)",
        ),
        (
            lambda t: truncate(t.parent / "images/img_004.png"),
            r"img_004\.png: cannot decode the image, it is truncated or corrupt",
        ),
        (
            lambda t: (t.parent / "images/img_004.png").write_bytes(b"not an image"),
            r"img_004\.png: cannot decode the image",
        ),
        (
            lambda t: (t.parent / "images/img_004.png").write_bytes(b""),
            r"img_004\.png: the file is empty",
        ),
        (
            lambda t: rewrite_row(t, 4, 1, "hatched"),
            r"row 5: label 'hatched' in column 'stage' is not one of the known classes "
            r"\(cleavage, morula, blastocyst\)",
        ),
        (
            lambda t: rewrite_row(t, 4, 0, "images/img_003.png"),
            r"img_003.png: key 'images_img_003' appears twice \(rows 4 and 5\)",
        ),
    ],
    ids=[
        "missing-file",
        "truncated",
        "not-an-image",
        "empty-file",
        "unknown-label",
        "duplicate-key",
    ],
)
def test_bad_row_fails_the_run_naming_file_and_reason(tmp_path, damage, message):
    table = make_image_table(tmp_path / "raw", n=8)
    damage(table)
    with pytest.raises(BadInputError, match=message):
        ingest(table, tmp_path / "ds", label_col="stage", classes=CLASSES)
    assert_nothing_written(tmp_path, tmp_path / "ds")


def test_truncated_jpeg_is_refused(tmp_path):
    table = make_image_table(tmp_path / "raw", kind="jpeg-rgb", n=4)
    truncate(tmp_path / "raw/images/img_002.jpg")
    with pytest.raises(
        BadInputError, match=r"img_002\.jpg: cannot decode the image, it is truncated"
    ):
        ingest(table, tmp_path / "ds")
    assert_nothing_written(tmp_path, tmp_path / "ds")


def test_multilabel_value_that_is_not_0_or_1(tmp_path):
    table = make_image_table(tmp_path / "raw", n=4)
    rewrite_row(table, 2, 4, "2")
    with pytest.raises(BadInputError, match=r"row 3: value '2' in column 'a' is not 0 or 1"):
        ingest(table, tmp_path / "ds", label_cols=("a", "b"))


def test_regression_target_that_is_not_a_number(tmp_path):
    table = make_image_table(tmp_path / "raw", n=4)
    rewrite_row(table, 1, 3, "n/a")
    with pytest.raises(
        BadInputError, match=r"row 2: target 'n/a' in column 'score' is not a finite number"
    ):
        ingest(table, tmp_path / "ds", target_col="score")


def test_table_without_the_named_columns(tmp_path, image_table):
    with pytest.raises(
        BadInputError,
        match=r"labels\.csv: no column 'grade' in the table \(its columns are: image_path, stage,",
    ):
        ingest(image_table, tmp_path / "ds", label_col="grade")
    assert_nothing_written(tmp_path, tmp_path / "ds")


@pytest.mark.parametrize(
    ("text", "message"),
    [("image_path,stage\n", "has a header but no rows"), ("", "the table is empty")],
)
def test_empty_table(tmp_path, text, message):
    table = tmp_path / "labels.csv"
    table.write_text(text)
    with pytest.raises(BadInputError, match=message):
        ingest(table, tmp_path / "ds")
    assert_nothing_written(tmp_path, tmp_path / "ds")


def test_missing_table(tmp_path):
    with pytest.raises(BadInputError, match=r"nope\.csv: the table file does not exist"):
        ingest(tmp_path / "nope.csv", tmp_path / "ds")


def test_output_holding_a_different_dataset_is_refused_and_kept(tmp_path, image_table):
    ingest(image_table, tmp_path / "ds", label_col="stage")
    before = {p: p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()}
    with pytest.raises(
        DatasetError, match="holds a different dataset; choose another --out or pass --overwrite"
    ):
        ingest(image_table, tmp_path / "ds", target_col="score")
    assert {p: p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()} == before


def test_output_holding_other_files_is_refused(tmp_path, image_table):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty and holds no medshard dataset"):
        ingest(image_table, tmp_path / "ds")
    assert (tmp_path / "ds" / "notes.txt").read_text() == "mine"


def test_failed_overwrite_keeps_the_old_dataset(tmp_path, image_table):
    ingest(image_table, tmp_path / "ds", label_col="stage")
    before = {p: p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()}
    truncate(tmp_path / "raw/images/img_010.png")
    with pytest.raises(BadInputError):
        ingest(image_table, tmp_path / "ds", target_col="score", overwrite=True)
    assert {p: p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()} == before


def test_skip_records_each_refusal_and_ingests_the_rest(tmp_path):
    table = make_image_table(tmp_path / "raw", n=12)
    (tmp_path / "raw/images/img_001.png").unlink()
    truncate(tmp_path / "raw/images/img_005.png")
    rewrite_row(table, 7, 1, "hatched")
    rewrite_row(table, 9, 0, "images/img_008.png")
    result = ingest(table, tmp_path / "ds", label_col="stage", classes=CLASSES, on_error="skip")
    assert result.samples == 8 and result.card.rejected == 4
    rejected = read_rejected(tmp_path / "ds").to_pylist()
    assert [r["row"] for r in rejected] == [2, 6, 8, 10]  # data rows, counted from 1
    reasons = " | ".join(r["reason"] for r in rejected)
    for part in (
        "file not found",
        "truncated or corrupt",
        "not one of the known classes",
        "appears twice",
    ):
        assert part in reasons
    keys = set(open_dataset(tmp_path / "ds").manifest.column("key").to_pylist())
    assert "images_img_005" not in keys and "images_img_008" in keys


def test_skip_with_nothing_left_fails(tmp_path):
    table = make_image_table(tmp_path / "raw", n=2)
    for p in (tmp_path / "raw/images").iterdir():
        p.write_bytes(b"broken")
    with pytest.raises(
        BadInputError, match=r"labels.csv: no sample could be ingested \(2 refused\)"
    ):
        ingest(table, tmp_path / "ds", on_error="skip")
    assert_nothing_written(tmp_path, tmp_path / "ds")


def test_a_key_that_is_not_a_valid_key(tmp_path):
    table = make_image_table(tmp_path / "raw", n=3)
    rows = [[f"images/img_00{i}.png", "k.1" if i == 1 else f"k{i}"] for i in range(3)]
    table = write_table(tmp_path / "raw/keys.csv", ["image_path", "id"], rows)
    with pytest.raises(BadInputError, match=r"row 2: key 'k\.1' is not a valid sample key"):
        ingest(table, tmp_path / "ds", key_col="id")


def test_an_image_type_that_is_not_accepted(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw/a.bmp").write_bytes(b"BM")
    table = write_table(tmp_path / "raw/t.csv", ["image_path"], [["a.bmp"]])
    with pytest.raises(BadInputError, match=r"a\.bmp: unsupported image type '\.bmp'"):
        ingest(table, tmp_path / "ds")
