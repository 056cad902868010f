"""What `medshard predict` writes never replaces a file of the user's: a label map goes
only where no other file is (or an earlier label map of predict's), --output-json only
over an earlier predictions document; and weights that do not fit the run are refused
in one short sentence. On real files: nibabel's volumes with their masks beside them,
scikit-image's tiles."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from medshard.cli import app
from medshard.trainers.byol import build_byol
from medshard.trainers.predict import PredictError, open_run, predict
from medshard.trainers.predict_inputs import file_inputs, folder_inputs
from medshard.trainers.predict_volumes import MARK, LabelMapError
from tests.trainers.test_predict import gray  # noqa: F401 - a fixture (real_mri: conftest)

VOLUMES = ("anatomical.nii", "reoriented.nii", "standard.nii.gz")


def _digests(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _copy_run(run: Path, folder: Path, **changes) -> Path:
    """A run folder at `folder` with `run`'s weights and its config with `changes`."""
    (folder / "best").mkdir(parents=True)
    shutil.copy(run / "best/model.safetensors", folder / "best/model.safetensors")
    config = yaml.safe_load((run / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump(config | changes))
    return folder


def _segmentation_run(dataset, folder):
    """A segmentation run on the real volumes whose model marks voxels over the mean."""
    (folder / "best").mkdir(parents=True)
    config = dict(
        name="seg",
        dataset=str(dataset),
        task="segmentation",
        model={"name": "tests.trainers.test_predict_segmentation:sign_net"},
        loader={"val_split": "train", "patch_size": [8, 8, 8]},
    )
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    save_file({"scale": torch.ones(())}, str(folder / "best/model.safetensors"))
    return open_run(folder)


def test_label_maps_never_replace_the_masks_beside_their_images(real_mri, tmp_path):  # noqa: F811
    dataset, raw = real_mri  # raw holds anatomical.nii beside the mask anatomical_seg.nii.gz
    run = _segmentation_run(dataset, tmp_path / "seg")
    before = _digests(raw)
    with pytest.raises(LabelMapError, match=r"anatomical_seg\.nii\.gz: exists and is not a label"):
        predict(run, folder_inputs(raw), output_dir=raw, show=False)
    with pytest.raises(LabelMapError, match=r"anatomical_seg\.nii\.gz: exists and is not a label"):
        predict(run, file_inputs([str(raw / "anatomical.nii")]), output_dir=raw, show=False)
    assert _digests(raw) == before

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(raw / "anatomical.nii", other / "anatomical.nii")
    twins = file_inputs([str(raw / "anatomical.nii"), str(other / "anatomical.nii")])
    with pytest.raises(LabelMapError, match=r"other/anatomical\.nii: its label map .* would repl"):
        predict(run, twins, output_dir=tmp_path / "maps", show=False)
    assert not (tmp_path / "maps").exists()

    with pytest.raises(LabelMapError, match=r"--output-dir is a file, not a folder"):
        predict(run, twins[:1], output_dir=raw / "anatomical.nii", show=False)

    sources = file_inputs([str(raw / name) for name in VOLUMES])
    first = predict(run, sources, output_dir=tmp_path / "maps", show=False)
    again = predict(run, sources, output_dir=tmp_path / "maps", show=False)  # its own maps
    assert [r["output"] for r in first["records"]] == [r["output"] for r in again["records"]]
    import nibabel as nib

    for record in again["records"]:
        assert nib.load(record["output"]).header["descrip"].item() == MARK
    assert _digests(raw) == before


def test_the_output_json_never_replaces_another_file(gray, tmp_path):  # noqa: F811
    run, tiles = gray
    image = sorted(tiles.glob("*.png"))[0]
    keep = tmp_path / "keep.png"
    shutil.copy(image, keep)
    args = ["predict", str(run), "--image", str(image), "--quiet", "--output-json"]
    runner = CliRunner()
    result = runner.invoke(app, [*args, str(keep)])
    assert result.exit_code == 1
    assert "keep.png: exists and is not a predictions document of medshard's" in result.output
    assert "Traceback" not in result.output
    assert keep.read_bytes() == image.read_bytes()
    result = runner.invoke(app, [*args, str(tmp_path)])
    assert result.exit_code == 1 and "--output-json is a folder" in result.output
    out = tmp_path / "p.json"
    assert runner.invoke(app, [*args, str(out)]).exit_code == 0
    assert runner.invoke(app, [*args, str(out)]).exit_code == 0  # an earlier document
    assert json.loads(out.read_text())["summary"]["predicted"] == 1


def test_weights_that_do_not_fit_are_named_in_a_few_words(gray, tmp_path):  # noqa: F811
    run, tiles = gray
    config = open_run(run).config
    byol = tmp_path / "byol-weights"
    (byol / "best").mkdir(parents=True)
    shutil.copy(run / "config.yaml", byol / "config.yaml")
    state = build_byol(config, 1, 10).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(byol / "best/model.safetensors"))
    with pytest.raises(PredictError, match=r"they are a BYOL run's; fine-tune from them") as info:
        predict(open_run(byol), file_inputs([str(sorted(tiles.glob("*.png"))[0])]), show=False)
    assert len(str(info.value)) < 300

    wrong = tmp_path / "wrong"
    (wrong / "best").mkdir(parents=True)
    shutil.copy(run / "config.yaml", wrong / "config.yaml")
    state = {"0.weight": torch.zeros(2, 2), "head.weight": torch.zeros(1)}
    save_file(state, str(wrong / "best/model.safetensors"))
    expected = (
        r"3 missing \(0\.bias, .*\); 1 unexpected \(head\.weight\); 1 of another shape \(0\.w"
    )
    with pytest.raises(PredictError, match=expected):
        predict(open_run(wrong), file_inputs([]), show=False)


def test_a_folder_of_mixed_real_files_gives_one_line_per_bad_file(gray, tmp_path):  # noqa: F811
    from tests.real_data import copy_nibabel_file, write_mixed_tiles

    run, _ = gray
    folder = tmp_path / "new"
    names = write_mixed_tiles(folder, size=40)  # gray, RGB, RGBA, palette; 8 and 16 bit
    (folder / "broken.png").write_bytes((folder / names[1]).read_bytes()[:100])
    (folder / "empty.png").write_bytes(b"")
    shutil.copy(folder / names[2], folder / "cell,copy.png")  # a comma in a file's name
    copy_nibabel_file("anatomical.nii", folder / "anatomical.nii")
    out = tmp_path / "p.json"
    medshard = str(Path(sys.executable).with_name("medshard"))
    result = subprocess.run(
        [medshard, "predict", str(run), "--images-dir", str(folder), "--output-json", str(out)]
        + ["--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "60", "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    document = json.loads(out.read_text())
    errors = {r["input"]: r["error"] for r in document["records"] if "error" in r}
    assert sorted(errors) == sorted(
        str(folder / n) for n in ("anatomical.nii", "broken.png", "empty.png")
    )
    assert document["summary"]["predicted"] == len(names) + 1
    assert str(folder / "cell,copy.png") in [r["input"] for r in document["records"]]
    lines = result.stderr.splitlines()
    for name, error in errors.items():
        assert f"{name}: {error}" in lines  # one whole line each, at any terminal width
    assert "this run predicts 2D images" in errors[str(folder / "anatomical.nii")]


def test_predictions_never_go_into_a_dataset(gray, real_mri, tmp_path):  # noqa: F811
    run, tiles = gray
    dataset, raw = real_mri
    card = open_run(run).dataset.path
    image = str(sorted(tiles.glob("*.png"))[0])
    before = sorted(p.name for p in card.iterdir())
    result = CliRunner().invoke(
        app,
        ["predict", str(run), "--image", image, "--output-json", str(card / "p.json"), "--quiet"],
    )
    assert result.exit_code == 1 and "lies inside the medshard dataset" in result.output
    assert sorted(p.name for p in card.iterdir()) == before
    seg = _segmentation_run(dataset, tmp_path / "seg")
    with pytest.raises(ValueError, match=r"--output-dir lies inside the medshard dataset"):
        predict(seg, file_inputs([str(raw / VOLUMES[0])]), output_dir=dataset / "maps", show=False)
    assert not (dataset / "maps").exists()


def test_truncated_real_volumes_get_one_line_records(real_mri, tmp_path):  # noqa: F811
    import gzip

    dataset, raw = real_mri
    seg = _segmentation_run(dataset, tmp_path / "seg")
    whole = (raw / "anatomical.nii").read_bytes()
    half = tmp_path / "half.nii"
    half.write_bytes(whole[: len(whole) // 2])  # nibabel's message spans two lines
    packed = gzip.compress(whole)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    inputs = file_inputs([str(half), str(cut), str(raw / "standard.nii.gz")])
    document = predict(seg, inputs, output_dir=tmp_path / "maps", show=False)
    first, second, good = document["records"]
    assert first["error"].startswith("cannot read the volume, it is truncated or corrupt")
    assert second["error"].startswith("cannot read the volume, it is truncated or corrupt")
    assert "\n" not in first["error"] and "\n" not in second["error"]
    assert "output" in good and document["summary"]["predicted"] == 1
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["standard_seg.nii.gz"]


def test_a_run_trained_on_a_relative_dataset_path_says_where_to_predict_from(
    gray,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    run, _ = gray
    dataset = Path(yaml.safe_load((run / "config.yaml").read_text())["dataset"])
    # a relative dataset path, as `medshard train` saves `dataset=ds`
    moved = _copy_run(run, tmp_path / "moved", dataset=dataset.name)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PredictError, match=r"relative to the folder the run was started from"):
        open_run(moved)
    monkeypatch.chdir(dataset.parent)
    assert open_run(moved).dataset.path.resolve() == dataset.resolve()


def test_an_image_smaller_than_the_runs_crop_is_refused_as_the_validation_refuses_it(
    gray,  # noqa: F811
    tmp_path,
):
    import numpy as np
    import skimage.data
    from PIL import Image

    run, _ = gray
    cropped = _copy_run(run, tmp_path / "cropped", augment={"random_crop": [16, 16]})
    camera = skimage.data.camera()
    paths = []
    for name, (h, w) in {"small": (8, 40), "line": (1, 500), "fits": (40, 40)}.items():
        paths.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(np.ascontiguousarray(camera[:h, :w])).save(paths[-1])
    records = predict(open_run(cropped), file_inputs(paths), show=False)["records"]
    assert records[0]["error"] == "is 8x40, smaller than the run's crop 16x16"
    assert records[1]["error"] == "is 1x500, smaller than the run's crop 16x16"
    assert "top" in records[2]
