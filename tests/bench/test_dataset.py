"""`medshard bench DATASET`: the engine and the lazy baseline over the dataset's sources."""

import shutil

import pytest

from medshard.bench import bench_dataset
from tests.conftest import ingest, make_image_table


def test_engine_and_baseline_are_both_measured_on_the_same_split(tmp_path):
    table = make_image_table(tmp_path / "raw", kind="png8-rgb", n=20)
    ingest(table, tmp_path / "ds", label_col="stage")
    engine, baseline = bench_dataset(
        tmp_path / "ds", batch_size=4, workers=0, repetitions=1, max_batches=3
    )
    assert engine.name == "engine" and baseline is not None and baseline.name == "baseline"
    assert engine.samples_per_s > 0 and baseline.samples_per_s > 0
    # the same decoded batch shape on both sides: bytes per sample agree
    per_sample = [m.mb_per_s / m.samples_per_s for m in (engine, baseline)]
    assert per_sample[0] == pytest.approx(per_sample[1]) and per_sample[0] > 0


def test_no_baseline_when_the_sources_are_gone(tmp_path):
    table = make_image_table(tmp_path / "raw", kind="png8-gray", n=12)
    ingest(table, tmp_path / "ds", label_col="stage")
    shutil.rmtree(tmp_path / "raw")
    engine, baseline = bench_dataset(tmp_path / "ds", batch_size=4, workers=0, repetitions=1)
    assert baseline is None and engine.samples_per_s > 0
