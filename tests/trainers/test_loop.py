"""The loop on real pixels: resume continues exactly, a pickled run folder is refused, and
a diverging run stops with one sentence and a non-zero exit from `medshard train`."""

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from medshard.cli import app
from medshard.trainers.cli import run
from tests.trainers.real_runs import real_gray_dataset, write_config
from tests.trainers.test_checkpoint import _Touch


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    return real_gray_dataset(tmp_path_factory.mktemp("gray"))


def _train(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def test_resume_restores_weights_and_optimizer_and_continues_exactly(gray, tmp_path):
    straight = write_config(tmp_path / "a.yaml", gray, tmp_path / "straight")
    run(str(straight), ["epochs=3"], quiet=True)
    stopped = write_config(tmp_path / "b.yaml", gray, tmp_path / "stopped")
    run(str(stopped), ["epochs=2"], quiet=True)
    after_two = load_file(tmp_path / "stopped/gray/last/model.safetensors")
    run(str(stopped), ["epochs=3"], resume=True, quiet=True)

    history = json.loads((tmp_path / "stopped/gray/history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    resumed = load_file(tmp_path / "stopped/gray/last/model.safetensors")
    assert any(not torch.equal(resumed[k], after_two[k]) for k in after_two)  # it trained on
    # Same weights as the run that never stopped: weights, Adam's moments and the
    # scheduler came back as they were, not freshly initialised.
    reference = load_file(tmp_path / "straight/gray/last/model.safetensors")
    assert reference.keys() == resumed.keys()
    for name, tensor in reference.items():
        assert torch.equal(resumed[name], tensor), name
    moments = load_file(tmp_path / "straight/gray/last/optimizer.safetensors")
    again = load_file(tmp_path / "stopped/gray/last/optimizer.safetensors")
    assert all(torch.equal(again[k], v) for k, v in moments.items())


def test_resume_refuses_a_pickle_in_the_run_folder_without_running_it(gray, tmp_path):
    config = write_config(tmp_path / "c.yaml", gray, tmp_path / "runs")
    assert _train(str(config), "epochs=1").exit_code == 0
    marker = tmp_path / "ran"
    crafted = tmp_path / "runs/gray/last/custom_checkpoint_0.pkl"
    torch.save(_Touch(marker), crafted)  # Accelerate's own format for this file
    result = _train(str(config), "epochs=2", "--resume")
    assert result.exit_code == 1
    assert f"{crafted}: the checkpoint holds a pickle" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not marker.exists()


def test_a_diverging_loss_stops_with_one_sentence_and_exit_1(gray, tmp_path):
    config = write_config(tmp_path / "d.yaml", gray, tmp_path / "runs", lr=1e30)
    result = _train(str(config))
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    stop = r"error: epoch 1, step \d+: the training loss is (nan|inf|-inf), so the run stops here"
    assert re.search(stop, output), output
    assert "check the inputs for NaN or infinite values, or lower the learning rate" in output
    assert "optim.lr=1e+30" in output and "Traceback" not in output
    assert not (tmp_path / "runs/gray/history.json").exists()  # no epoch was recorded


@pytest.fixture(scope="module")
def mixed_tiles(tmp_path_factory):
    """scikit-image tiles mixing gray, RGB, RGBA and palette, 8 and 16 bit, ingested by
    medshard.ingest.images."""
    from tests.conftest import ingest
    from tests.real_data import mixed_tile_table

    root = tmp_path_factory.mktemp("mixed")
    table = mixed_tile_table(root / "raw")
    ingest(table, root / "ds", label_col="stage", group_col="patient", val_fraction=0.3)
    return root / "ds"


@pytest.mark.parametrize(("channels", "expected"), [(None, 3), (1, 1)])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_a_folder_mixing_channel_counts_trains_with_the_batches_channels(
    mixed_tiles, tmp_path, channels, expected, backend
):
    """The network takes the loader's channel count (the card's, or augment.channels),
    not the first manifest row's (which may be gray or RGBA)."""
    config = write_config(tmp_path / "c.yaml", mixed_tiles, tmp_path / "runs")
    overrides = ["epochs=1", f"loader.backend={backend}"]
    overrides += [f"augment.channels={channels}"] if channels else []
    run(str(config), overrides, quiet=True)
    history = json.loads((tmp_path / "runs/gray/history.json").read_text())
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    weights = load_file(tmp_path / "runs/gray/last/model.safetensors")
    assert weights["0.weight"].shape[1] == expected  # the first convolution's inputs


def test_a_run_resumed_for_more_epochs_never_trains_at_a_learning_rate_of_zero(gray, tmp_path):
    config = write_config(tmp_path / "e.yaml", gray, tmp_path / "runs")
    overrides = ["optim.schedule=cosine"]
    run(str(config), [*overrides, "epochs=1"], quiet=True)
    run(str(config), [*overrides, "epochs=3"], resume=True, quiet=True)
    history = json.loads((tmp_path / "runs/gray/history.json").read_text())
    rates = [h["lr"] for h in history]
    assert len(rates) == 3 and all(rate > 0 for rate in rates[1:]), rates


def test_a_new_run_never_writes_over_a_started_one(gray, tmp_path):
    config = write_config(tmp_path / "f.yaml", gray, tmp_path / "runs")
    assert _train(str(config), "epochs=1").exit_code == 0
    before = (tmp_path / "runs/gray/last/model.safetensors").read_bytes()
    result = _train(str(config), "epochs=1")
    assert result.exit_code == 1
    assert "holds a run already; pass --resume to continue it" in " ".join(result.output.split())
    assert (tmp_path / "runs/gray/last/model.safetensors").read_bytes() == before
