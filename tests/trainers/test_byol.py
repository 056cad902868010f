"""BYOL: the target follows the momentum rule, the loss is the symmetric normalised MSE,
a run trains on CPU with its loss falling and its target moving, the k-NN probe reports
on labelled splits, and the saved backbone loads into the multi-label config."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from medshard.ingest.images import ImageIngestOptions, ingest_images
from medshard.synth.images import MAMMO_CLASSES, synth_mammo_tiles
from medshard.trainers.byol import (
    Byol,
    ByolLoss,
    build_byol,
    momentum_at,
    online_backbone,
    replace_head,
)
from medshard.trainers.config import ConfigError, TrainConfig
from medshard.trainers.finetune import load_weights
from medshard.trainers.loop import train
from medshard.trainers.models import build_model
from tests.conftest import ingest
from tests.real_data import mixed_tile_table
from tests.trainers.real_runs import TINY, real_gray_dataset, tiny_cnn

BYOL = {"hidden_dim": 32, "projection_dim": 16}


def _byol(total: int = 10, momentum: float = 0.9) -> Byol:
    backbone = tiny_cnn(2, 1, 3)
    return Byol(backbone, replace_head(backbone), 8, 4, momentum, total)


def test_momentum_rises_from_its_base_to_one_on_a_cosine():
    assert momentum_at(0, 100, 0.996) == pytest.approx(0.996)
    assert momentum_at(50, 100, 0.996) == pytest.approx(0.998)
    assert momentum_at(100, 100, 0.996) == pytest.approx(1.0)
    assert momentum_at(250, 100, 0.996) == pytest.approx(1.0)


def test_the_target_moves_by_the_momentum_rule_after_each_optimizer_step():
    model = _byol(total=4, momentum=0.9)
    optimizer = torch.optim.SGD(
        [p for n, p in model.named_parameters() if not n.startswith("predictor")], lr=0.5
    )
    model.follow(optimizer)
    names = dict(model.target_backbone.named_buffers())
    assert set(names) == {n for n, _ in model.backbone.named_parameters()}
    assert not any(n.startswith("target") for n, _ in model.named_parameters())
    for step in range(2):
        before = {n: b.clone() for n, b in names.items()}
        loss = ByolLoss()(model(torch.rand(6, 2, 1, 16, 16)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tau = momentum_at(step, 4, 0.9)
        for name, parameter in model.backbone.named_parameters():
            expected = tau * before[name] + (1 - tau) * parameter.detach()
            assert torch.allclose(names[name], expected, atol=1e-6)
            assert not torch.equal(names[name], before[name])
    assert int(model.target_steps) == 2


def test_the_loss_is_the_symmetric_normalised_mse():
    p1, p2 = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])
    z1, z2 = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]])

    def by_hand(p, z):  # |p/|p| - z/|z||^2
        return sum((a / math.hypot(*p[0]) - b / math.hypot(*z[0])) ** 2 for a, b in zip(p[0], z[0]))

    loss = ByolLoss()({"p1": p1, "p2": p2, "z1": z1, "z2": z2})
    assert float(loss) == pytest.approx(float(by_hand(p1, z2) + by_hand(p2, z1)))


def test_a_batch_of_images_gives_the_backbone_features():
    model = _byol()
    assert model(torch.rand(5, 1, 16, 16)).shape == (5, 64)


def _config(dataset, out, **extra) -> TrainConfig:
    raw = dict(
        name="byol",
        dataset=str(dataset),
        task="byol",
        output_dir=str(out),
        loader={"batch_size": 4, "num_workers": 0, "backend": "torch"},
        augment={"random_crop": [24, 24], "flip_h": True, "rot90": True},
        model={"name": TINY},
        byol=BYOL,
        optim={"lr": 0.01, "grad_clip": None},
        epochs=4,
    )
    return TrainConfig.model_validate(raw | extra)


def test_byol_trains_on_cpu_with_its_loss_falling_the_target_moving_and_the_knn_probe(tmp_path):
    dataset = real_gray_dataset(tmp_path / "data")
    config = _config(dataset, tmp_path / "runs")
    train(config, quiet=True)
    history = json.loads((tmp_path / "runs/byol/history.json").read_text())
    losses = [record["train_loss"] for record in history]
    assert losses[-1] < losses[0]
    assert all(0.0 <= record["val_knn_accuracy"] <= 1.0 for record in history)
    weights = load_file(str(tmp_path / "runs/byol/last/model.safetensors"))
    steps = 4 * math.ceil(12 / 4)  # 12 training tiles, batches of 4, 4 epochs
    assert int(weights["target_steps"]) == steps
    moved = [
        name
        for name in weights
        if name.startswith("target_backbone.")
        and not torch.equal(weights[name], weights[name.replace("target_", "", 1)])
    ]
    assert moved  # the target trails the online backbone, it is no copy of it


def test_unlabelled_tiles_pretrain_and_are_judged_by_the_validation_loss(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=2, size=32)
    ingest(table, tmp_path / "ds", group_col="patient", val_fraction=0.3)
    config = _config(tmp_path / "ds", tmp_path / "runs", epochs=2, augment={"flip_h": True})
    best = train(config, quiet=True)
    assert not any(name.startswith("val_knn") for name in best)
    assert math.isfinite(best["val_loss"])


def _mammo(root):
    table = synth_mammo_tiles(root / "raw", n=24, size=32)
    options = ImageIngestOptions(
        table=table,
        out=root / "ds",
        image_col="tile_path",
        label_cols=MAMMO_CLASSES,
        group_col="patient_id",
        workers=1,
        processes=False,
        quiet=True,
    )
    ingest_images(options)
    return root / "ds"


def test_the_saved_backbone_loads_into_the_multilabel_config_with_its_report(tmp_path, capsys):
    dataset = _mammo(tmp_path)
    pretrain = _config(dataset, tmp_path / "runs", model={"name": "resnet18"}, epochs=1)
    pretrain = pretrain.model_copy(update={"augment": {"flip_h": True}})
    best = train(pretrain, quiet=True)
    assert "val_knn_accuracy" in best and "val_knn_auroc_macro" in best
    saved = tmp_path / "runs/byol/best"
    finetune = TrainConfig.model_validate(
        dict(
            name="tiles",
            dataset=str(dataset),
            task="multilabel",
            output_dir=str(tmp_path / "runs"),
            loader={"batch_size": 4, "num_workers": 0, "backend": "torch"},
            model={"name": "resnet18"},
            finetune={"checkpoint": str(saved), "freeze_backbone_epochs": 1},
            epochs=1,
        )
    )
    model = build_model(finetune, 2, 1, len(MAMMO_CLASSES))
    report = load_weights(model, saved)
    backbone = online_backbone(load_file(str(saved / "model.safetensors")))
    assert sorted(report.missing) == ["fc.bias", "fc.weight"]
    assert not report.unexpected and not report.skipped_shape
    assert sorted(report.loaded) == sorted(backbone)
    for name, tensor in backbone.items():
        assert torch.equal(model.state_dict()[name], tensor)
    capsys.readouterr()
    train(finetune)
    shown = capsys.readouterr().out
    assert f"fine-tuning from {saved}: the online backbone of a BYOL checkpoint: loaded" in shown
    assert "2 missing, 0 unexpected" in shown


def test_refusals(tmp_path):
    volumes = tmp_path / "v"
    from tests.volume_data import tiff_root

    raw, _ = tiff_root(tmp_path / "raw", n=3)
    from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff

    ingest_tiff(
        TiffIngestOptions(
            root=raw,
            labels=raw / "classes.csv",
            out=volumes,
            crops=(6, 10, 12),
            workers=1,
            processes=False,
            quiet=True,
        )
    )
    with pytest.raises(ConfigError, match=r"task 'byol' pretrains on 2D images, and .* volumes"):
        train(_config(volumes, tmp_path / "runs"), quiet=True)
    headless = _config(volumes, tmp_path / "runs", model={"name": "unet"})
    with pytest.raises(ConfigError, match=r"task 'byol' needs a network that ends in a Linear"):
        build_byol(headless, 1, 10)


def test_two_processes_keep_the_target_in_step_and_a_resumed_run_goes_on(tmp_path):
    import yaml

    from tests.trainers.test_elastic import audits, launch

    dataset = real_gray_dataset(tmp_path / "data", per_class=7)
    config = tmp_path / "byol.yaml"
    raw = _config(dataset, tmp_path / "runs", epochs=2).model_dump(mode="json")
    config.write_text(yaml.safe_dump(raw))
    first = launch(2, str(config))
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs/byol"
    ranks = audits(run, 2)
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # targets included
    history = json.loads((run / "history.json").read_text())
    assert all(0.0 <= record["val_knn_accuracy"] <= 1.0 for record in history)
    train_count = sum(r["split"] == "train" for r in _rows(dataset))
    per_rank = math.ceil(math.ceil(train_count / 2) / 4)  # batches of 4 on each rank
    steps = int(load_file(str(run / "last/model.safetensors"))["target_steps"])
    assert steps == 2 * per_rank
    resumed = launch(1, str(config), "epochs=3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = int(load_file(str(run / "last/model.safetensors"))["target_steps"])
    assert after == steps + math.ceil(train_count / 4)


def _rows(dataset):
    from medshard.shards.reader import open_dataset

    return open_dataset(dataset).manifest.to_pylist()


def test_a_training_split_smaller_than_one_dropped_batch_is_refused_before_the_run(tmp_path):
    dataset = real_gray_dataset(tmp_path / "data")  # 12 training tiles of skimage pictures
    loader = {"batch_size": 16, "num_workers": 0, "backend": "torch", "drop_last": True}
    config = _config(dataset, tmp_path / "runs", loader=loader)
    with pytest.raises(
        ConfigError, match=r"split 'train' gives each of 1 rank\(s\) 12 samples, fe"
    ):
        train(config, quiet=True)
    assert not (tmp_path / "runs/byol").exists()
    kept = _config(dataset, tmp_path / "runs", loader=loader | {"drop_last": False}, epochs=1)
    assert math.isfinite(train(kept, quiet=True)["train_loss"])
