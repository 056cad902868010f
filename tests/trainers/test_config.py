"""Bad configs are refused with a clear sentence before training starts."""

import pytest

from medshard.trainers.config import ConfigError, load_config
from medshard.trainers.kfold import aggregate_folds
from medshard.trainers.loop import train
from tests.conftest import CLASSES, ingest, make_image_table


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_refused_naming_it(tmp_path):
    path = write(
        tmp_path, "name: x\ndataset: d\ntask: classification\nmodel: {name: resnet18, depth: 3}\n"
    )
    with pytest.raises(ConfigError, match=r"c\.yaml: model\.depth: unknown key"):
        load_config(path)


def test_wrong_type_is_refused(tmp_path):
    path = write(tmp_path, "name: x\ndataset: d\ntask: classification\nepochs: many\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: epochs: Input should be a valid integer"):
        load_config(path)


def test_unknown_task_and_bad_override(tmp_path):
    path = write(tmp_path, "name: x\ndataset: d\ntask: detection\n")
    with pytest.raises(ConfigError, match=r"task: Input should be 'classification'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"override 'epochs' is not of the form key=value"):
        load_config(write(tmp_path, "name: x\ndataset: d\ntask: regression\n"), ["epochs"])


def test_overrides_reach_nested_fields(tmp_path):
    path = write(tmp_path, "name: x\ndataset: d\ntask: regression\n")
    config = load_config(
        path, ["loader.batch_size=3", "loader.patch_size=[8,8,8]", "augment.flip_h=true"]
    )
    assert config.loader.batch_size == 3 and config.loader.patch_size == (8, 8, 8)
    assert config.augment == {"flip_h": True}


@pytest.fixture
def images(tmp_path):
    table = make_image_table(tmp_path / "raw", n=12)
    ingest(table, tmp_path / "ds", label_col="stage", classes=CLASSES)
    return tmp_path / "ds"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("segmentation", "needs masks, and .* has none"),
        ("multilabel", "task 'multilabel' does not fit .*: its labels are for classification"),
        ("regression", "task 'regression' does not fit"),
        ("reconstruction", "trains on clips or volumes, not 2D images"),
    ],
)
def test_a_task_that_does_not_fit_the_dataset(images, tmp_path, task, message):
    path = write(tmp_path, f"name: x\ndataset: {images}\ntask: {task}\noutput_dir: {tmp_path}\n")
    with pytest.raises(ConfigError, match=message):
        train(load_config(path), quiet=True)
    assert not (tmp_path / "x").exists()


def test_fold_aggregation_gives_mean_std_and_t_interval():
    summary = aggregate_folds(
        [{"epoch": 3, "val_accuracy": v, "val_f1": [0.1]} for v in (0.7, 0.8, 0.9)]
    )
    accuracy = summary["val_accuracy"]
    assert accuracy["mean"] == pytest.approx(0.8) and accuracy["std"] == pytest.approx(0.1)
    low, high = accuracy["ci95"]
    assert high - 0.8 == pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-5)  # t(0.975, 2)
    assert (
        low == pytest.approx(0.8 - (high - 0.8))
        and "val_f1" not in summary
        and "epoch" not in summary
    )
