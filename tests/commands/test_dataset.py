"""`medshard inspect` and `verify` on damaged real datasets: one sentence, exit 1, never a
traceback."""

import pytest
from PIL import Image
from typer.testing import CliRunner

from medshard.cli import app
from medshard.shards.checksums import MISMATCH
from medshard.shards.layout import CARD_NAME, MANIFEST_NAME
from tests.conftest import ingest
from tests.real_data import mixed_tile_table
from tests.shards.conftest import flip_byte


@pytest.fixture
def real_images(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.0)
    return tmp_path / "ds"


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


def refused(result) -> bool:
    """Exit 1 through typer, the one sentence on the console, no traceback."""
    return (
        result.exit_code == 1
        and isinstance(result.exception, SystemExit)
        and "Traceback" not in result.output
    )


def test_verify_and_inspect_name_a_damaged_manifest_in_one_sentence(real_images):
    assert run("verify", str(real_images)).exit_code == 0
    flip_byte(real_images / MANIFEST_NAME, 100)
    for command in ("verify", "inspect"):
        result = run(command, str(real_images))
        assert refused(result)
        assert f"{real_images / MANIFEST_NAME}: {MISMATCH}" in result.output


@pytest.mark.parametrize("position", [0, 40, -3])
def test_verify_and_inspect_name_a_damaged_card_in_one_sentence(real_images, position):
    flip_byte(real_images / CARD_NAME, position)
    for command in ("verify", "inspect"):
        result = run(command, str(real_images))
        assert refused(result)
        assert f"{real_images / CARD_NAME}: " in result.output


@pytest.fixture(scope="module")
def real_mri(tmp_path_factory):
    """nibabel's real MRI volumes with masks thresholded from their own intensities."""
    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
    from tests.real_data import real_nifti_table

    root = tmp_path_factory.mktemp("inspect-mri")
    options = NiftiIngestOptions(
        table=real_nifti_table(root / "raw"),
        out=root / "ds",
        modalities=("image",),
        mask_col="seg",
        key_col="subject",
        label_col="group",
        val_fraction=0.0,
        workers=1,
        processes=False,
        quiet=True,
    )
    ingest_nifti(options)
    return root / "ds"


def saved_keys(result) -> list[str]:
    """The keys that `inspect --show` reports after the sheet's path and size."""
    return result.output.strip().split(" px: ", 1)[1].replace("\n", "").split(", ")


def test_inspect_without_sheet_options_prints_the_card_and_saves_nothing(
    real_images, tmp_path, monkeypatch
):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    result = run("inspect", str(real_images))
    assert result.exit_code == 0 and "split" in result.output and "samples" in result.output
    assert list((tmp_path / "cwd").iterdir()) == []


def test_inspect_show_saves_a_seeded_sheet_and_names_its_samples(real_images, tmp_path):
    out = tmp_path / "sheets" / "tiles.png"
    first = run("inspect", str(real_images), "--show", "3", "--seed", "2", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"{out}: 3 samples, ")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 300 and png.size[1] > 300
    again = run("inspect", str(real_images), "--show", "3", "--seed", "2", "--out", str(out))
    assert saved_keys(again) == saved_keys(first) and len(set(saved_keys(first))) == 3


def test_inspect_keys_shows_the_named_samples_in_order(real_images, tmp_path):
    out = tmp_path / "named.png"
    keys = "batch0_moon_gray16,batch0_ihc_rgb8"
    result = run("inspect", str(real_images), "--keys", keys, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert saved_keys(result) == keys.split(",") and out.is_file()


def test_inspect_loader_draws_patches_with_a_training_configs_settings(real_mri, tmp_path):
    config = tmp_path / "seg.yaml"
    config.write_text(
        f"name: seg\ndataset: {real_mri}\ntask: segmentation\n"
        "loader: {patch_size: [8, 12, 12], foreground_prob: 1.0}\n"
        "augment: {flip_axes: [0, 1, 2], gamma: [0.8, 1.25]}\n"
    )
    out = tmp_path / "batch.png"
    args = ("inspect", str(real_mri), "--loader", "--config", str(config), "--show", "4")
    result = run(*args, "--out", str(out))
    assert result.exit_code == 0, result.output
    keys = saved_keys(result)
    assert len(keys) == 4 and all("#" in k for k in keys)  # random patches of the volumes
    assert out.is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--split", "train"],
            "--split, --out, --seed and --config choose what a sheet shows: "
            "add --show N, --keys or --loader",
        ),
        (
            ["--show", "2", "--config", "c.yaml"],
            "--config gives the loader's settings: add --loader",
        ),
        (["--keys", "nope"], "{ds}: no sample 'nope'"),
        (["--show", "2", "--split", "val"], "{ds}: no split 'val'; the splits are train"),
        (["--show", "2", "--out", "{ds}/sheet.png"], "not written inside the dataset"),
        (["--show", "2", "--out", "{tmp}/sheet.jpg"], "a sheet is saved as PNG"),
        (["--loader", "--keys", "batch0_ihc_rgb8"], "named keys show stored samples"),
        (["--loader", "--config", "{tmp}/none.yaml"], "the config file does not exist"),
    ],
)
def test_inspect_refuses_bad_sheet_requests_in_one_sentence(real_images, tmp_path, args, message):
    fill = {"ds": real_images, "tmp": tmp_path}
    result = run("inspect", str(real_images), *[a.format(**fill) for a in args])
    assert refused(result)
    assert message.format(**fill) in " ".join(result.output.split())
    assert not (real_images / "sheet.png").exists() and not (tmp_path / "sheet.jpg").exists()
