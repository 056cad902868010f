"""Every workload config in configs/ trains a few tiny epochs on CPU and its loss falls."""

import json
from pathlib import Path

import pytest

from medshard.trainers.cli import run

CONFIGS = Path(__file__).parents[2] / "configs"

# Small models and sizes so that CPU runs take seconds; everything else is the config's own.
CASES = {
    "embryo-stage": ("embryo-stage", ["augment.resize=[32,32]", "model.name=resnet18"]),
    "mammo-tiles": ("mammo-tiles", ["augment.random_crop=[48,48]"]),
    "nuclei-3d": ("nuclei-3d", ["model.kwargs={widths: [8, 16]}", "optim.lr=0.003"]),
    "ivf-timelapse": (
        "ivf-timelapse",
        ["model.kwargs={width: 8, hidden: 8, depth: 2, num_classes: 2}"],
    ),
    "fomo-mri-classification": ("fomo-mri", ["loader.patch_size=[16,16,16]"]),
    "fomo-mri-segmentation": (
        "fomo-mri",
        ["loader.patch_size=[16,16,16]", "model.kwargs={channels: [8, 16, 32], strides: [2, 2]}"],
    ),
    "fomo-mri-regression": ("fomo-mri-age", ["loader.patch_size=[16,16,16]", "optim.lr=0.01"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_trains_and_its_loss_falls(name, datasets, tmp_path):
    data, extra = CASES[name]
    overrides = [
        f"dataset={datasets[data]}",
        f"output_dir={tmp_path}",
        "epochs=4",
        "loader.num_workers=0",
        "loader.batch_size=4",
        "early_stopping=null",
        *extra,
    ]
    metrics = run(str(CONFIGS / f"{name}.yaml"), overrides, quiet=True)
    history = json.loads((tmp_path / name / "history.json").read_text())
    assert len(history) == 4
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert 0 <= history[-1]["data_wait_share"] <= 1
    assert "val_loss" in metrics and (tmp_path / name / "best").is_dir()
