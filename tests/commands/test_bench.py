"""`medshard bench DATASET` as a user runs it: a table of both loaders, and a speed-up that
is the ratio of the two rates it shows."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ingest
from tests.real_data import mixed_size_table, mixed_tile_table

MEDSHARD = str(Path(sys.executable).with_name("medshard"))


def bench(dataset: Path, *more: str) -> subprocess.CompletedProcess:
    command = [MEDSHARD, "bench", str(dataset), "--batch-size", "4", "--workers", "0"]
    command += ["--repetitions", "1", *more]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={"COLUMNS": "200"}
    )


def rate(output: str, loader: str) -> float:
    return float(re.search(rf"│\s+{loader}\s+│\s+([0-9.]+)", output).group(1))


def test_bench_shows_both_loaders_and_their_ratio(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=2)
    ingest(table, tmp_path / "ds", label_col="stage")
    done = bench(tmp_path / "ds")
    assert done.returncode == 0, done.stderr
    ratio = float(re.search(r"engine / lazy baseline: ([0-9.]+)x", done.stdout).group(1))
    measured = rate(done.stdout, "engine") / rate(done.stdout, "baseline")
    assert abs(ratio - measured) <= 0.051 + 0.01 * measured  # both printed rounded


def test_bench_of_volumes_smaller_than_the_patch_pads_them_on_both_sides(tmp_path):
    from tests.real_data import ingest_real_mri

    ingest_real_mri(tmp_path)  # 33x41x25, 21x26x22 and 4x5x7 voxels
    done = bench(tmp_path / "ds", "--patch-size", "16,16,16", "--batch-size", "3")
    assert done.returncode == 0, done.stderr
    assert rate(done.stdout, "engine") > 0 and rate(done.stdout, "baseline") > 0


def test_bench_without_reachable_sources_measures_the_engine_alone(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage")
    shutil.rmtree(tmp_path / "raw")
    done = bench(tmp_path / "ds")
    assert done.returncode == 0, done.stderr
    assert rate(done.stdout, "engine") > 0 and "no baseline" in done.stdout
    assert "baseline │" not in done.stdout


def test_bench_of_a_folder_that_is_not_a_dataset_fails_in_one_line(tmp_path):
    done = bench(tmp_path)
    assert done.returncode == 1 and "not a medshard dataset" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_bench_of_images_of_several_sizes_takes_a_resize(tmp_path):
    table = mixed_size_table(tmp_path / "raw", names=("camera_gray8.png", "cell_gray16.png"))
    ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.0)
    refused = bench(tmp_path / "ds")
    assert refused.returncode == 1 and "differ in size" in refused.stderr
    resized = bench(tmp_path / "ds", "--resize", "32,32")
    assert resized.returncode == 0, resized.stderr
    assert rate(resized.stdout, "engine") > 0 and rate(resized.stdout, "baseline") > 0
    assert "training copies" not in resized.stdout


def test_bench_says_when_the_engine_reads_training_copies(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage", train_size="32")
    done = bench(tmp_path / "ds")
    assert done.returncode == 0, done.stderr
    assert "the engine reads the training copies made at ingest" in done.stdout
    assert "the baseline decodes the original files" in done.stdout
