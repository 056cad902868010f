"""Resume, k-fold, fine-tuning and a real two-process `accelerate launch` on CPU."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from medshard.shards.reader import open_dataset
from medshard.trainers.cli import run

CONFIGS = Path(__file__).parents[2] / "configs"
SMALL = [
    "loader.num_workers=0",
    "loader.batch_size=4",
    "augment.resize=[32,32]",
    "model.name=resnet18",
]


def test_resume_keeps_the_history_and_adds_the_next_epoch(datasets, tmp_path):
    """(That resume restores the weights exactly is tested in test_loop.py.)"""
    base = [f"dataset={datasets['embryo-stage']}", f"output_dir={tmp_path}", *SMALL]
    run(str(CONFIGS / "embryo-stage.yaml"), [*base, "epochs=2"], quiet=True)
    first = json.loads((tmp_path / "embryo-stage/history.json").read_text())
    run(str(CONFIGS / "embryo-stage.yaml"), [*base, "epochs=3"], resume=True, quiet=True)
    history = json.loads((tmp_path / "embryo-stage/history.json").read_text())
    assert len(history) == 3 and history[:2] == first and history[2]["epoch"] == 3


def test_folds_run_each_fold_and_aggregate(datasets, tmp_path):
    overrides = [
        f"dataset={datasets['fomo-mri']}",
        f"output_dir={tmp_path}",
        "epochs=1",
        "loader.num_workers=0",
        "loader.patch_size=[16,16,16]",
    ]
    summary = run(str(CONFIGS / "fomo-mri-classification.yaml"), overrides, folds=3, quiet=True)
    assert len(summary["val_accuracy"]["values"]) == 3
    assert json.loads((tmp_path / "fomo-mri-classification-folds.json").read_text())["folds"] == 3
    rows = open_dataset(datasets["fomo-mri"]).manifest.to_pylist()
    validated_somewhere = set()
    for k in range(3):
        audit = json.loads((tmp_path / f"fomo-mri-classification-fold{k}/rank0.json").read_text())
        # the keys actually read: patches are named VOLUME#i
        trained = {key.split("#")[0] for key in audit["samples"]}
        validated = {key.split("#")[0] for key in audit["validated"]}
        assert validated == {r["key"] for r in rows if r["fold"] == k}
        assert trained == {
            r["key"] for r in rows if r["split"] != "test" and r["fold"] not in (-1, k)
        }
        assert trained and validated and not trained & validated
        validated_somewhere |= validated
    assert validated_somewhere == {r["key"] for r in rows if r["fold"] >= 0}


def test_finetuning_reuses_a_frozen_backbone_with_another_head(datasets, tmp_path):
    common = [
        f"output_dir={tmp_path}",
        "epochs=1",
        "loader.num_workers=0",
        "loader.batch_size=4",
        "model.name=resnet18",
    ]
    embryo = [f"dataset={datasets['embryo-stage']}", "augment.resize=[32,32]", "augment.channels=1"]
    run(str(CONFIGS / "embryo-stage.yaml"), [*common, *embryo], quiet=True)
    mammo = [
        f"dataset={datasets['mammo-tiles']}",
        "augment.random_crop=[48,48]",
        f"finetune.checkpoint={tmp_path / 'embryo-stage/best'}",
        "finetune.freeze_backbone_epochs=1",
        "seed=3",
    ]
    metrics = run(str(CONFIGS / "mammo-tiles.yaml"), [*common, *mammo], quiet=True)
    assert "val_auroc_macro" in metrics and len(metrics["val_auroc"]) == 3
    pretrained = load_file(tmp_path / "embryo-stage/best/model.safetensors")
    tuned = load_file(tmp_path / "mammo-tiles/last/model.safetensors")
    # parameters only: batch norm keeps its running statistics even when frozen
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    weights = [name for name in tuned if not name.endswith(statistics)]
    backbone = [name for name in weights if not name.startswith("fc.")]
    head = [name for name in weights if name.startswith("fc.")]
    assert len(backbone) > 20 and sorted(head) == ["fc.bias", "fc.weight"]
    for name in backbone:  # loaded from the checkpoint and left unchanged by the steps
        assert torch.equal(tuned[name], pretrained[name]), name
    assert all(not torch.equal(tuned[name], pretrained[name]) for name in head)


def _launch_two_cpu_processes(*arguments: str) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    command = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "medshard.trainers",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_accelerate_launch_two_cpu_processes(datasets, tmp_path):
    """`accelerate launch` with torchrun's launcher and ACCELERATE_USE_CPU: two processes
    on gloo, as the README shows for CPU machines; stopped after one epoch and resumed."""
    overrides = [f"dataset={datasets['embryo-stage']}", f"output_dir={tmp_path}", *SMALL]
    config = str(CONFIGS / "embryo-stage.yaml")
    result = _launch_two_cpu_processes(config, *overrides, "epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    last = tmp_path / "embryo-stage/last"
    assert {"rng-0.json", "rng-1.json", "model.safetensors"} <= {p.name for p in last.iterdir()}
    result = _launch_two_cpu_processes(config, *overrides, "epochs=2", "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "embryo-stage/history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    ranks = [json.loads((tmp_path / f"embryo-stage/rank{r}.json").read_text()) for r in (0, 1)]
    rows = open_dataset(datasets["embryo-stage"]).manifest.to_pylist()
    train_keys = {r["key"] for r in rows if r["split"] == "train"}
    val_keys = {r["key"] for r in rows if r["split"] == "val"}
    first, second = (set(r["samples"]) for r in ranks)
    assert first | second == train_keys
    assert len(first & second) <= 1  # only the sample that pads an odd count
    validated = ranks[0]["validated"] + ranks[1]["validated"]
    assert sorted(validated) == sorted(val_keys)  # every validation sample exactly once
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # replicas in sync


def test_a_diverging_two_process_run_stops_on_every_rank(datasets, tmp_path):
    """A NaN loss stops both ranks at the same step (none waits in a collective) with
    one sentence and a non-zero exit from `accelerate launch`."""
    overrides = [f"dataset={datasets['embryo-stage']}", f"output_dir={tmp_path}", *SMALL]
    result = _launch_two_cpu_processes(
        str(CONFIGS / "embryo-stage.yaml"), *overrides, "epochs=1", "optim.lr=1e30"
    )
    assert result.returncode != 0
    stops = re.findall(
        r"error: epoch 1, step (\d+): the training loss is \S+, so the run", result.stderr
    )
    assert len(stops) == 2 and stops[0] == stops[1], result.stderr[-3000:]
    # the only traceback is the launcher's own report that its children failed
    assert result.stderr.count("Traceback (most recent call last)") == 1
    assert "ChildFailedError" in result.stderr


def test_an_epoch_line_names_each_figure_once():
    from medshard.trainers.records import epoch_line

    record = {"epoch": 2, "train_loss": 0.5, "val_loss": 0.25, "val_auroc": 0.75}
    assert epoch_line(record, "val_auroc") == (
        "epoch 2: train loss 0.5000, val loss 0.2500, val_auroc 0.7500"
    )
    assert epoch_line(record, "val_loss") == "epoch 2: train loss 0.5000, val loss 0.2500"
