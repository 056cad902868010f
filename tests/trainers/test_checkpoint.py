"""Training state round-trips through safetensors and JSON; pickles are never loaded."""

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from medshard.trainers.checkpoint import (
    CheckpointError,
    TrainingState,
    copy_checkpoint,
    has_checkpoint,
    is_pickle,
    load_checkpoint,
    save_checkpoint,
)


class _Touch:
    """Unpickling this creates `marker`: what a crafted checkpoint file would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _parts(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    return dict(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler)


def _trained(seed: int = 0):
    parts = _parts(seed)
    for step in range(3):
        loss = parts["model"](torch.randn(4, 3)).square().mean()
        parts["accelerator"].backward(loss)
        parts["optimizer"].step()
        parts["optimizer"].zero_grad()
        parts["scheduler"].step(1.0 + step)  # worse each time: the plateau lowers the lr
    return parts


def _strict_json(path: Path):
    return json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path}: {name}"))


def test_state_round_trips_weights_optimizer_scheduler_and_rng(tmp_path):
    saved = _trained()
    history = [{"epoch": 1, "val_loss": 0.5, "val_auroc": float("nan")}]
    state = TrainingState(epoch=1, step=2, loader={"epoch": 1, "batches": 2}, history=history)
    save_checkpoint(tmp_path / "last", state, **saved)
    after_save = (random.random(), np.random.rand(), torch.rand(3))

    fresh = _parts(seed=1)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    restored = load_checkpoint(tmp_path / "last", **fresh)

    assert (random.random(), np.random.rand()) == after_save[:2]
    assert torch.equal(torch.rand(3), after_save[2])
    for name, tensor in saved["model"].state_dict().items():
        assert torch.equal(fresh["model"].state_dict()[name], tensor), name
    old, new = saved["optimizer"].state_dict(), fresh["optimizer"].state_dict()
    assert old["param_groups"] == new["param_groups"] and old["state"].keys() == new["state"].keys()
    for index, slots in old["state"].items():
        for slot, value in slots.items():
            assert torch.equal(new["state"][index][slot], value), (index, slot)
    assert fresh["scheduler"].state_dict() == saved["scheduler"].state_dict()
    assert fresh["optimizer"].param_groups[0]["lr"] == pytest.approx(0.01 * 0.1**2)
    assert restored.epoch == 1 and restored.step == 2 and restored.loader == state.loader
    assert np.isnan(restored.history[0]["val_auroc"]) and restored.history[0]["val_loss"] == 0.5
    files = sorted(p.name for p in (tmp_path / "last").iterdir())
    assert "model.safetensors" in files and "rng-0.json" in files
    assert not any(is_pickle(tmp_path / "last" / name) for name in files)
    for name in files:
        if name.endswith(".json"):
            _strict_json(tmp_path / "last" / name)  # no NaN or Infinity in any JSON


def test_saving_again_replaces_the_checkpoint_and_leaves_no_staging(tmp_path):
    parts = _trained()
    save_checkpoint(tmp_path / "last", TrainingState(epoch=1), **parts)
    save_checkpoint(tmp_path / "last", TrainingState(epoch=2), **parts)
    copy_checkpoint(tmp_path / "last", tmp_path / "best")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last"]
    assert load_checkpoint(tmp_path / "best", **_parts(1)).epoch == 2


def test_a_crash_between_the_two_renames_resumes_from_the_previous_checkpoint(tmp_path):
    parts = _trained()
    save_checkpoint(tmp_path / "last", TrainingState(epoch=1), **parts)
    (tmp_path / "last").rename(tmp_path / ".last.old")  # as a kill after the first rename
    assert load_checkpoint(tmp_path / "last", **_parts(1)).epoch == 1


def test_a_half_written_checkpoint_is_never_picked(tmp_path):
    parts = _trained()
    save_checkpoint(tmp_path / "last", TrainingState(epoch=1), **parts)
    staging = tmp_path / ".last.partial"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"half")  # killed before checkpoint.json
    assert load_checkpoint(tmp_path / "last", **_parts(1)).epoch == 1


def _accelerate_layout(folder: Path, marker: Path) -> None:
    """The files Accelerate's save_state left in `last/`, with a crafted pickle."""
    folder.mkdir(parents=True)
    (folder / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Touch(marker)))
    (folder / "model.safetensors").write_bytes(b"{}")


@pytest.mark.parametrize(
    "name", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "notes.txt"]
)
def test_a_pickle_in_a_checkpoint_is_refused_unopened(tmp_path, name):
    parts = _trained()
    save_checkpoint(tmp_path / "last", TrainingState(epoch=1), **parts)
    marker = tmp_path / "ran"
    (tmp_path / "last" / name).write_bytes(pickle.dumps(_Touch(marker)))
    message = rf"last/{name}: the checkpoint holds a pickle, which medshard never loads"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "last", **_parts(1))
    assert not marker.exists()


def test_accelerates_old_pickled_state_is_refused_naming_the_pickle(tmp_path):
    marker = tmp_path / "ran"
    _accelerate_layout(tmp_path / "last", marker)
    with pytest.raises(CheckpointError, match=r"last/custom_checkpoint_0\.pkl: the checkpoint"):
        load_checkpoint(tmp_path / "last", **_parts(1))
    assert not marker.exists()


def test_torch_save_zip_is_a_pickle_and_safetensors_is_not(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights")  # zip of data.pkl, no suffix
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    assert is_pickle(tmp_path / "weights") and not is_pickle(tmp_path / "w.safetensors")


def test_nothing_to_resume_and_a_foreign_folder(tmp_path):
    with pytest.raises(CheckpointError, match=r"last: nothing to resume"):
        load_checkpoint(tmp_path / "last", **_parts(1))
    (tmp_path / "last").mkdir()
    with pytest.raises(CheckpointError, match=r"last: not a medshard checkpoint"):
        load_checkpoint(tmp_path / "last", **_parts(1))


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    save_checkpoint(tmp_path / "last", TrainingState(epoch=1), **_trained())
    other = _parts(1)
    other["model"] = torch.nn.Linear(3, 7)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: the weights do not fit"):
        load_checkpoint(tmp_path / "last", **other)


def test_a_damaged_state_file_is_named(tmp_path):
    save_checkpoint(tmp_path / "last", TrainingState(epoch=1), **_trained())
    (tmp_path / "last/optimizer.json").write_text('{"state": ')
    with pytest.raises(CheckpointError, match=r"optimizer\.json: damaged checkpoint file"):
        load_checkpoint(tmp_path / "last", **_parts(1))


def test_a_mid_epoch_state_round_trips_with_each_ranks_loader_state(tmp_path):
    loader = {"epoch": 2, "position": 12, "rank_state": {"rank": 0, "dali": "AAEC"}}
    state = TrainingState(
        epoch=2,
        step=3,
        loader=loader,
        history=[{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}],
        tally={"loss": 1.5, "samples": 12, "waited": 0.1, "seconds": 2.0},
        batch={"per_rank": 4, "ranks": 1, "accumulate": 1},
        validations=[{"epoch": 3, "step": 2, "position": 8, "val_loss": 0.25}],
    )
    save_checkpoint(tmp_path / "last", state, **_trained())
    assert _strict_json(tmp_path / "last/loader-0.json") == loader
    assert load_checkpoint(tmp_path / "last", **_parts(1)) == state
    own = loader | {"rank_state": None}  # each rank reads its own file
    (tmp_path / "last/loader-0.json").write_text(json.dumps(own))
    assert load_checkpoint(tmp_path / "last", **_parts(1)).loader == own
    # a rank the run did not have takes the main process's loader state
    (tmp_path / "last/loader-0.json").unlink()
    assert load_checkpoint(tmp_path / "last", **_parts(1)).loader == loader


def test_folds_resume_those_with_a_checkpoint_and_start_the_others(tmp_path, monkeypatch):
    from medshard.trainers import kfold
    from medshard.trainers.config import TrainConfig

    calls = []

    def train(config, *, resume, quiet):
        calls.append((config.fold, resume))
        return {"val_loss": 0.5}

    monkeypatch.setattr(kfold, "train", train)
    config = TrainConfig(name="mri", dataset=tmp_path, task="classification", output_dir=tmp_path)
    save_checkpoint(tmp_path / "mri-fold0/last", TrainingState(epoch=2), **_trained())
    (tmp_path / "mri-fold1").mkdir()
    save_checkpoint(tmp_path / "mri-fold1/last", TrainingState(epoch=1, step=3), **_trained())
    (tmp_path / "mri-fold1/last").rename(tmp_path / "mri-fold1/.last.old")  # killed mid-save
    kfold.train_folds(config, 3, resume=True, quiet=True)
    assert calls == [(0, True), (1, True), (2, False)]
    assert has_checkpoint(tmp_path / "mri-fold1/last")
    assert not has_checkpoint(tmp_path / "mri-fold2/last")
