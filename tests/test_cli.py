"""The command line as the README shows it, run as a user would (a real subprocess)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.real_data import mixed_tile_table

MEDSHARD = str(Path(sys.executable).with_name("medshard"))


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [MEDSHARD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def mammo(tmp_path_factory):
    """The README's quickstart: synth, ingest on 2 local worker processes."""
    root = tmp_path_factory.mktemp("cli")
    run("synth", "mammo-tiles", str(root / "raw"), "--n", "60")
    ingest = [
        "ingest",
        "images",
        str(root / "raw/labels.csv"),
        "--out",
        str(root / "ds"),
        "--image-col",
        "tile_path",
        "--label-cols",
        "mass,calcification,architectural_distortion",
        "--group-col",
        "patient_id",
        "--test-fraction",
        "0.1",
        "--folds",
        "5",
        "--workers",
        "2",
    ]
    first = run(*ingest)
    return root, ingest, first


def test_ingest_prints_a_summary(mammo):
    _, _, first = mammo
    assert "train" in first.stdout and "MB/s" in first.stdout and "shard" in first.stdout


def test_inspect_shows_counts_fields_and_shapes(mammo):
    root, _, _ = mammo
    out = run("inspect", str(root / "ds")).stdout
    for text in ("multilabel", "calcification", "image.png", "1x256x256", "uint16", "folds"):
        assert text in out


def test_verify_passes_then_fails_on_damage(mammo, tmp_path):
    root, _, _ = mammo
    assert "OK, 60 samples" in run("verify", str(root / "ds")).stdout
    import shutil

    shutil.copytree(root / "ds", tmp_path / "copy")
    shard = sorted((tmp_path / "copy/wds").glob("train-*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    broken = run("verify", str(tmp_path / "copy"), ok=False)
    assert broken.returncode == 1 and "truncated" in broken.stderr


def test_rerun_does_nothing_and_says_so(mammo):
    _, ingest, _ = mammo
    assert "already ingested" in run(*ingest).stdout


def test_bad_input_exits_non_zero_with_one_sentence(tmp_path):
    run("synth", "embryo-stage", str(tmp_path / "raw"), "--n", "6")
    victim = sorted((tmp_path / "raw/images").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:100])
    result = run(
        "ingest",
        "images",
        str(tmp_path / "raw/labels.csv"),
        "--out",
        str(tmp_path / "ds"),
        "--image-col",
        "image_path",
        "--label-col",
        "stage",
        "--workers",
        "1",
        ok=False,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and victim.name in lines[0] and "truncated or corrupt" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ds").exists()


def test_inspect_refuses_a_directory_that_is_not_a_dataset(tmp_path):
    result = run("inspect", str(tmp_path), ok=False)
    assert result.returncode == 1 and "not a medshard dataset" in result.stderr


def test_volume_quickstart_nuclei_3d(tmp_path):
    run("synth", "nuclei-3d", str(tmp_path / "raw"), "--n", "4", "--shape", "40,64,64")
    run(
        "ingest",
        "tiff",
        str(tmp_path / "raw"),
        "--labels",
        str(tmp_path / "raw/classes.csv"),
        "--out",
        str(tmp_path / "ds"),
        "--crops",
        "20,32,32",
        "--workers",
        "1",
    )
    out = run("inspect", str(tmp_path / "ds")).stdout
    assert "(c,z,y,x)" in out and "1x40x64x64" in out and "0.5x0.2x0.2" in out
    assert "32 of 20x32x32" in out
    assert "OK, 36 samples" in run("verify", str(tmp_path / "ds")).stdout


def test_volume_quickstart_fomo_mri(tmp_path):
    run("synth", "fomo-mri", str(tmp_path / "raw"), "--n", "4", "--shape", "24,28,20")
    run(
        "ingest",
        "nifti",
        str(tmp_path / "raw/participants.csv"),
        "--out",
        str(tmp_path / "ds"),
        "--modalities",
        "flair,dwi,adc",
        "--mask-col",
        "seg",
        "--target-col",
        "age",
        "--key-col",
        "subject",
        "--workers",
        "1",
    )
    out = run("inspect", str(tmp_path / "ds")).stdout
    assert "regression" in out and "flair, dwi, adc" in out and "percentiles" in out
    assert "OK, 4 samples" in run("verify", str(tmp_path / "ds")).stdout
    damaged = tmp_path / "raw/sub-0002/anat/sub-0002_dwi.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:200])
    failed = run(
        "ingest",
        "nifti",
        str(tmp_path / "raw/participants.csv"),
        "--out",
        str(tmp_path / "ds2"),
        "--modalities",
        "flair,dwi,adc",
        "--workers",
        "1",
        ok=False,
    )
    assert failed.returncode == 1 and "sub-0002_dwi.nii.gz: cannot read the volume" in failed.stderr


def test_video_quickstart_ivf_timelapse(tmp_path):
    run("synth", "ivf-timelapse", str(tmp_path / "raw"), "--n", "4", "--frames", "12")
    result = run(
        "ingest",
        "video",
        str(tmp_path / "raw/index.csv"),
        "--out",
        str(tmp_path / "ds"),
        "--video-col",
        "video_path",
        "--label-col",
        "outcome",
        "--group-col",
        "embryo_id",
        "--clip-len",
        "8",
        "--clip-stride",
        "4",
        "--workers",
        "1",
    )
    assert "frames/s" in result.stdout
    out = run("inspect", str(tmp_path / "ds")).stdout
    assert "12x128x128" in out and "clips" in out and "fps" in out
    assert "OK, 12 samples" in run("verify", str(tmp_path / "ds")).stdout


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["--on-error", "maybe"], 2, "--on-error takes fail or skip"),
        (["--size", "12"], 2, "give the size as H,W"),
        (["--fit", "wobble"], 1, "error: --fit: Input should be 'pad', 'crop' or 'stretch'"),
    ],
)
def test_bad_flag_values_are_refused_naming_the_flag(tmp_path, flags, code, message):
    table = tmp_path / "index.csv"
    table.write_text("video_path\nv.mp4\n")
    result = run(
        "ingest",
        "video",
        str(table),
        "--out",
        str(tmp_path / "ds"),
        "--video-col",
        "video_path",
        *flags,
        ok=False,
    )
    assert result.returncode == code and message in result.stderr
    assert not (tmp_path / "ds").exists()


# --- --out is safe: option refusals, inputs, one build at a time, interruptions ----------

ENV = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}


def images_ingest(table: Path, out: Path, *flags: str) -> list[str]:
    return [
        "ingest",
        "images",
        str(table),
        "--out",
        str(out),
        "--image-col",
        "image_path",
        "--label-col",
        "stage",
        "--workers",
        "1",
        *flags,
    ]


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--shard-size", "0"], "error: --shard-size: Input should be greater than 0"),
        (
            ["--samples-per-shard", "-5"],
            "error: --samples-per-shard: Input should be greater than 0",
        ),
        (
            ["--folds", "-1"],
            "error: --folds: give 0 (no cross-validation) or 2 or more folds, not -1",
        ),
        (
            ["--val-fraction", "0.5", "--test-fraction", "0.5"],
            "error: --test-fraction: validation 0.5 and test 0.5 leave no sample to train on; "
            "their sum must be below 1",
        ),
        (["--workers", "0"], "error: --workers: Input should be greater than or equal to 1"),
    ],
)
def test_option_values_that_build_nothing_are_refused_in_one_line(tmp_path, flags, message):
    result = run(*images_ingest(tmp_path / "raw/labels.csv", tmp_path / "ds", *flags), ok=False)
    assert result.returncode == 1 and stderr_lines(result) == [message]
    assert list(tmp_path.iterdir()) == []


def test_ingest_over_the_raw_folder_is_refused_and_leaves_it_byte_identical(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    before = files(tmp_path)
    raw = tmp_path / "raw"
    result = run(*images_ingest(table, raw, "--overwrite"), ok=False)
    assert result.returncode == 1
    assert stderr_lines(result) == [
        f"error: {raw}: --out is {raw}, which this ingest reads; choose an --out outside its inputs"
    ]
    assert files(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


@pytest.mark.parametrize(("value", "code"), [("abc", 2), ("64,64", 2)])
def test_a_patch_size_that_is_not_three_numbers_is_refused_naming_the_flag(tmp_path, value, code):
    table = tmp_path / "subjects.csv"
    table.write_text("subject,t1\ns1,s1.nii.gz\n")
    flags = ["--modalities", "t1", "--key-col", "subject", "--patch-size", value]
    result = run("ingest", "nifti", str(table), "--out", str(tmp_path / "ds"), *flags, ok=False)
    assert result.returncode == code
    assert f"--patch-size '{value}': give three comma-separated numbers z,y,x" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "ds").exists()
