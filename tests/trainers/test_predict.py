"""`medshard predict`: one probability per class per input, equal to a direct forward
pass of the validation preprocessing, the same alone as inside a batch; bad inputs become
records; segmentation label maps overlay their NIfTI sources; the JSON validates against
docs/predictions.schema.json."""

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from medshard.cli import app
from medshard.ingest.images import ImageIngestOptions, ingest_images
from medshard.loaders import build_loader
from medshard.synth.images import MAMMO_CLASSES, synth_mammo_tiles
from medshard.trainers.config import TrainConfig
from medshard.trainers.loop import train
from medshard.trainers.models import build_model
from medshard.trainers.predict import PredictError, open_run, predict
from medshard.trainers.predict_inputs import file_inputs, folder_inputs
from medshard.trainers.predict_records import ThresholdError, parse_thresholds
from tests.trainers.real_runs import TINY, real_gray_dataset

SCHEMA = json.loads((Path(__file__).parents[2] / "docs/predictions.schema.json").read_text())
LOADER = {"batch_size": 4, "num_workers": 0, "backend": "torch"}


def _train(dataset: Path, out: Path, task: str, **extra) -> Path:
    raw = dict(
        name=task,
        dataset=str(dataset),
        task=task,
        output_dir=str(out),
        loader=LOADER,
        model={"name": TINY},
        epochs=1,
    )
    train(TrainConfig.model_validate(raw | extra), quiet=True)
    return out / task


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    """A classification run on real gray tiles, and the tiles' folder."""
    root = tmp_path_factory.mktemp("predict-gray")
    dataset = real_gray_dataset(root / "data")
    return _train(dataset, root / "runs", "classification"), root / "data/raw/tiles"


@pytest.fixture(scope="module")
def mammo(tmp_path_factory):
    """A multi-label run on synthetic 16-bit mammography tiles with a test split."""
    root = tmp_path_factory.mktemp("predict-mammo")
    table = synth_mammo_tiles(root / "raw", n=30, size=32)
    ingest_images(
        ImageIngestOptions(
            table=table,
            out=root / "ds",
            image_col="tile_path",
            label_cols=MAMMO_CLASSES,
            group_col="patient_id",
            test_fraction=0.3,
            workers=1,
            processes=False,
            quiet=True,
        )
    )
    augment = {"resize": [24, 24], "flip_h": True}
    return _train(root / "ds", root / "runs", "multilabel", augment=augment), root / "ds"


def _direct(run: Path, dataset: Path, split: str) -> dict[str, torch.Tensor]:
    """Each sample's output by hand: the run's network and weights on the evaluation
    loader's batches of one."""
    config = open_run(run).config
    model = build_model(config, 2, 1, open_run(run).task.out_channels)
    model.load_state_dict(load_file(str(run / "best/model.safetensors")))
    model.eval()
    from medshard.loaders import Augment2D

    loader = build_loader(
        dataset,
        split,
        augment=Augment2D(**config.augment),
        training=False,
        batch_size=1,
        num_workers=0,
        backend="torch",
        device="cpu",
        uneven="uneven",
    )
    with torch.no_grad():
        return {b["key"][0]: model(b["image"])[0] for b in loader}


def test_multilabel_json_gives_each_label_a_probability_equal_to_a_direct_forward_pass(mammo):
    run, dataset = mammo
    document = predict(open_run(run), _dataset(dataset, "test"), batch_size=3, show=False)
    jsonschema.validate(document, SCHEMA)
    direct = _direct(run, dataset, "test")
    assert [r["input"] for r in document["records"]] == sorted(direct, key=list(direct).index)
    for record in document["records"]:
        probabilities = record["probabilities"]
        assert list(probabilities) == list(MAMMO_CLASSES)
        expected = direct[record["input"]].sigmoid().tolist()
        assert list(probabilities.values()) == pytest.approx(expected, abs=1e-5)
        assert record["labels"] == [c for c, p in probabilities.items() if p >= 0.5]
        assert isinstance(record["truth"], list)
    counts = document["summary"]["counts"]
    assert counts == {c: sum(c in r["labels"] for r in document["records"]) for c in MAMMO_CLASSES}
    assert "test_auroc_macro" in document["metrics"] and "test_exact_match" in document["metrics"]


def _dataset(path, split):
    from medshard.trainers.predict_inputs import dataset_inputs

    return dataset_inputs(path, split, False)


def test_an_image_gives_the_same_probabilities_alone_and_inside_a_batch(gray):
    run, tiles = gray
    files = sorted(str(p) for p in tiles.glob("*.png"))
    together = predict(open_run(run), file_inputs(files), batch_size=4, show=False)
    jsonschema.validate(together, SCHEMA)
    for record in together["records"][:3]:
        alone = predict(open_run(run), file_inputs([record["input"]]), show=False)
        assert alone["records"][0]["probabilities"] == pytest.approx(
            record["probabilities"], abs=1e-6
        )
        assert sum(record["probabilities"].values()) == pytest.approx(1.0)
        assert record["top"] == max(record["probabilities"], key=record["probabilities"].get)
    folder = predict(open_run(run), folder_inputs(tiles), show=False)
    assert [r["input"] for r in folder["records"]] == files


def test_a_bad_image_gets_a_record_with_its_error_and_only_nothing_predicted_fails(gray, tmp_path):
    run, tiles = gray
    good = sorted(tiles.glob("*.png"))[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:60])  # truncated
    out = tmp_path / "p.json"
    runner = CliRunner()
    args = ["predict", str(run / "best"), "--output-json", str(out), "--quiet"]
    result = runner.invoke(app, [*args, "--image", str(good), "--image", str(bad)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    jsonschema.validate(document, SCHEMA)
    assert "top" in document["records"][0]
    assert document["records"][1] == {
        "input": str(bad),
        "error": document["records"][1]["error"],
    }
    assert "cannot decode the image, it is truncated or corrupt" in document["records"][1]["error"]
    assert document["summary"] | {"counts": {}} == {
        "inputs": 2,
        "predicted": 1,
        "failed": 1,
        "counts": {},
    }
    result = runner.invoke(app, [*args, "--image", str(bad), "--image", str(tmp_path / "no.png")])
    assert result.exit_code == 1
    assert json.loads(out.read_text())["summary"]["predicted"] == 0


def test_thresholds_one_for_all_one_per_label_or_by_name():
    labels = ["mass", "calcification", "distortion"]
    assert parse_thresholds("0.3", labels) == [0.3, 0.3, 0.3]
    assert parse_thresholds("0.1,0.2,0.3", labels) == [0.1, 0.2, 0.3]
    assert parse_thresholds("calcification=0.9", labels) == [0.5, 0.9, 0.5]
    with pytest.raises(ThresholdError, match=r"names 'cyst', which is not a label of this run"):
        parse_thresholds("cyst=0.2", labels)
    with pytest.raises(ThresholdError, match=r"give one value, one per label \(3: mass"):
        parse_thresholds("0.1,0.2", labels)
    with pytest.raises(ThresholdError, match=r"1\.5 is not a probability in \[0, 1\]"):
        parse_thresholds("1.5", labels)
    with pytest.raises(ThresholdError, match=r"'high': not a number"):
        parse_thresholds("high", labels)


def test_refusals(gray, tmp_path):
    run, tiles = gray
    with pytest.raises(PredictError, match=r"not a run folder \(config\.yaml beside best/ or"):
        open_run(tmp_path)
    byol = tmp_path / "byol"
    byol.mkdir()
    (byol / "config.yaml").write_text(
        (run / "config.yaml").read_text().replace("task: classification", "task: byol")
    )
    (byol / "best").mkdir()
    (byol / "best/model.safetensors").write_bytes((run / "best/model.safetensors").read_bytes())
    with pytest.raises(PredictError, match=r"a byol run; predict serves classification, multi"):
        open_run(byol)
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "config.yaml").write_text(
        (run / "config.yaml").read_text().replace(str(open_run(run).config.dataset), "/no/data")
    )
    (gone / "last").mkdir()
    (gone / "last/model.safetensors").write_bytes((run / "best/model.safetensors").read_bytes())
    with pytest.raises(PredictError, match=r"/no/data: the run's training dataset cannot be"):
        open_run(gone)
    with pytest.raises(Exception, match=r"holds no image files"):
        folder_inputs(tmp_path)
    result = CliRunner().invoke(
        app, ["predict", str(run), "--output-json", str(tmp_path / "p.json")]
    )
    assert result.exit_code == 2 and "give exactly one of --image, --images-dir and" in (
        result.output
    )


def test_regression_records_give_the_value_in_the_targets_units():
    from medshard.trainers.predict_records import output_records, summary

    records = output_records(
        "regression",
        [],
        torch.tensor([[61.5], [30.0]]),
        ["a", "b"],
        [{"target": 60.0}, {}],
        [],
        "age",
    )
    assert records == [
        {"input": "a", "value": 61.5, "target": "age", "truth": 60.0},
        {"input": "b", "value": 30.0, "target": "age"},
    ]
    jsonschema.validate(
        {
            "format": "medshard-predictions",
            "version": 1,
            "run": "r",
            "checkpoint": "r/best",
            "task": "regression",
            "classes": [],
            "target": "age",
            "records": records,
            "summary": summary("regression", [], records),
        },
        SCHEMA,
    )
    assert summary("regression", [], records)["mean"] == pytest.approx(45.75)


@pytest.mark.parametrize("copies", ["raw", "png"])
def test_a_run_that_read_training_copies_predicts_files_through_the_same_copy(tmp_path, copies):
    from tests.conftest import ingest

    real_gray_dataset(tmp_path / "data", size=40)
    table = tmp_path / "data/raw/labels.csv"
    ingest(table, tmp_path / "ds", label_col="picture", train_size=(24, 24), train_format=copies)
    run = _train(tmp_path / "ds", tmp_path / "runs", "classification")
    files = sorted(str(p) for p in (tmp_path / "data/raw/tiles").glob("*.png"))
    document = predict(open_run(run), file_inputs(files), show=False)
    from_dataset = predict(open_run(run), _dataset(tmp_path / "ds", "val"), show=False)
    direct = _direct(run, tmp_path / "ds", "val")  # the validation reads the copies
    by_key = {f"tiles_{Path(r['input']).stem}": r for r in document["records"]}
    for record in from_dataset["records"]:
        expected = direct[record["input"]].softmax(-1).tolist()
        for found in (record, by_key[record["input"]]):
            assert list(found["probabilities"].values()) == pytest.approx(expected, abs=1e-5)


def test_more_refusals_each_in_one_sentence(gray, real_mri, tmp_path):
    import shutil

    import yaml

    run, tiles = gray
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run / "config.yaml", empty / "config.yaml")
    with pytest.raises(PredictError, match=r"the run has no weights yet \(no best/ or last/"):
        open_run(empty)
    wrong = tmp_path / "wrong"
    (wrong / "best").mkdir(parents=True)
    shutil.copy(run / "config.yaml", wrong / "config.yaml")
    save_file({"0.weight": torch.zeros(2, 2)}, str(wrong / "best/model.safetensors"))
    with pytest.raises(
        PredictError, match=r"best: the weights do not fit the run.s config \(\d+ missing"
    ):
        predict(open_run(wrong), file_inputs([]), show=False)
    if not torch.cuda.is_available():
        with pytest.raises(PredictError, match=r"--device cuda: no CUDA device is available"):
            predict(open_run(run), file_inputs([]), device="cuda", show=False)
    with pytest.raises(Exception, match=r"not a folder"):
        folder_inputs(tmp_path / "nothing")

    dataset, raw = real_mri
    seg = tmp_path / "seg"
    (seg / "best").mkdir(parents=True)
    raw_config = dict(
        name="seg",
        dataset=str(dataset),
        task="segmentation",
        model={"name": "tests.trainers.test_predict_segmentation:sign_net"},
        loader={"val_split": "train"},
    )
    (seg / "config.yaml").write_text(yaml.safe_dump(raw_config))
    save_file({"scale": torch.ones(())}, str(seg / "best/model.safetensors"))
    with pytest.raises(PredictError, match=r"a segmentation run writes its label maps as NIfTI"):
        predict(open_run(seg), file_inputs([]), show=False)
    with pytest.raises(PredictError, match=r"a segmentation run without loader\.patch_size"):
        predict(open_run(seg), file_inputs([]), output_dir=tmp_path / "maps", show=False)

    png = str(sorted(tiles.glob("*.png"))[0])
    volume = str(raw / "anatomical.nii")
    records = predict(
        open_run(run),
        file_inputs([str(tmp_path / "gone.png"), f"{png},{png}", volume]),
        show=False,
    )["records"]
    assert records[0] == {"input": str(tmp_path / "gone.png"), "error": "not a file"}
    assert "several files make one input only as NIfTI modalities" in records[1]["error"]
    assert (
        records[2]["error"]
        == "a volume of shape (25, 41, 33) (z, y, x); this run predicts 2D images"
    )
    raw_config["loader"] = {"val_split": "train", "patch_size": [8, 8, 8]}
    (seg / "config.yaml").write_text(yaml.safe_dump(raw_config))
    records = predict(open_run(seg), file_inputs([png]), output_dir=tmp_path / "maps", show=False)[
        "records"
    ]
    assert "the model takes volumes of 1 channels (image) as (c, z, y, x)" in records[0]["error"]
