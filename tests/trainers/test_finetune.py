"""Pretrained weights load by name and shape from safetensors; pickles are refused."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from medshard.trainers.cli import run
from medshard.trainers.config import ConfigError
from medshard.trainers.finetune import load_weights, read_state_dict
from tests.trainers.real_runs import real_gray_dataset, write_config
from tests.trainers.test_checkpoint import _Touch


def test_a_checkpoint_that_matches_nothing(tmp_path):
    save_file({"not.a.layer": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"w\.safetensors: the checkpoint matches no tensor"):
        load_weights(model, tmp_path / "w.safetensors")


def test_weights_load_by_name_and_shape_with_a_report(tmp_path):
    source = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 5))
    report = load_weights(target, tmp_path / "w.safetensors")
    assert sorted(report.loaded) == ["0.bias", "0.weight"]
    assert sorted(report.skipped_shape) == ["1.bias", "1.weight"]
    assert torch.equal(target[0].weight, source[0].weight)


@pytest.mark.parametrize("name", ["weights.pt", "weights.safetensors", "weights"])
def test_a_pickled_state_dict_is_refused_whatever_its_name(tmp_path, name):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / name)
    message = rf"{name}: is a pickle; medshard loads weights only from safetensors"
    with pytest.raises(ConfigError, match=message):
        read_state_dict(tmp_path / name)


def test_a_folder_of_pickled_weights_is_refused_naming_the_file(tmp_path):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"pytorch_model\.bin: is a pickle"):
        read_state_dict(tmp_path)


def test_a_file_that_is_neither_is_named(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"not weights at all")
    with pytest.raises(ConfigError, match=r"w\.safetensors: not a safetensors file"):
        read_state_dict(tmp_path / "w.safetensors")


def test_finetune_checkpoint_that_is_a_pickle_stops_the_run_unopened(tmp_path):
    dataset = real_gray_dataset(tmp_path / "data")
    marker = tmp_path / "ran"
    with open(tmp_path / "backbone.pkl", "wb") as handle:
        pickle.dump(_Touch(marker), handle)
    config = write_config(tmp_path / "c.yaml", dataset, tmp_path / "runs")
    override = f"finetune.checkpoint={tmp_path / 'backbone.pkl'}"
    with pytest.raises(ConfigError, match=r"backbone\.pkl: is a pickle"):
        run(str(config), [override], quiet=True)
    assert not marker.exists()


def test_a_run_folder_fine_tunes_from_its_best_checkpoint(tmp_path):
    dataset = real_gray_dataset(tmp_path / "data")
    config = write_config(tmp_path / "c.yaml", dataset, tmp_path / "runs")
    run(str(config), ["epochs=1"], quiet=True)
    best = tmp_path / "runs/gray/best"
    state = read_state_dict(best)
    assert state.keys() == {"0.weight", "0.bias", "4.weight", "4.bias"}
    metrics = run(
        str(config), ["epochs=1", "name=again", f"finetune.checkpoint={best}"], quiet=True
    )
    assert "val_loss" in metrics


def test_a_frozen_backbone_keeps_the_loaded_weights_while_the_head_learns(tmp_path):
    """Fine-tuning loads the checkpoint's backbone (values compared), keeps it frozen
    through the first epoch's steps while the head changes, and trains it once thawed."""
    dataset = real_gray_dataset(tmp_path / "data")
    config = write_config(tmp_path / "c.yaml", dataset, tmp_path / "runs")
    run(str(config), ["epochs=1", "seed=1"], quiet=True)
    pretrained = read_state_dict(tmp_path / "runs/gray/best")
    tune = ["seed=2", f"finetune.checkpoint={tmp_path / 'runs/gray/best'}"]
    tune += ["finetune.freeze_backbone_epochs=1", "optim.schedule=none"]
    run(str(config), ["epochs=1", "name=frozen", *tune], quiet=True)
    frozen = read_state_dict(tmp_path / "runs/frozen/last")
    backbone, head = ("0.weight", "0.bias"), ("4.weight", "4.bias")
    for name in backbone:  # loaded (a fresh network with seed 2 would differ) and unchanged
        assert torch.equal(frozen[name], pretrained[name]), name
    assert all(not torch.equal(frozen[name], pretrained[name]) for name in head)
    run(str(config), ["epochs=2", "name=thawed", *tune], quiet=True)
    thawed = read_state_dict(tmp_path / "runs/thawed/last")
    assert all(not torch.equal(thawed[name], pretrained[name]) for name in backbone)
