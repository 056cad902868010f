"""The how-to's chain with the shipped configs (docs/howto-mammo-byol.md): BYOL on the
mammography tiles, multi-label fine-tuning from its backbone, `medshard predict` on the
test split; at a tiny size on CPU."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

from medshard.ingest.images import ImageIngestOptions, ingest_images
from medshard.shards.reader import open_dataset
from medshard.synth.images import MAMMO_CLASSES, synth_mammo_tiles
from medshard.trainers.cli import run

ROOT = Path(__file__).parents[2]
TINY = [
    "loader.num_workers=0",
    "loader.batch_size=8",
    "optim.mixed_precision='no'",
    "checkpoint.every_minutes=null",
]


def test_byol_then_finetune_then_predict_with_the_shipped_configs(tmp_path, capsys):
    table = synth_mammo_tiles(tmp_path / "raw", n=40, size=48)
    ingest_images(
        ImageIngestOptions(
            table=table,
            out=tmp_path / "ds",
            image_col="tile_path",
            label_cols=MAMMO_CLASSES,
            group_col="patient_id",
            test_fraction=0.2,
            workers=1,
            processes=False,
            quiet=True,
        )
    )
    where = [f"dataset={tmp_path / 'ds'}", f"output_dir={tmp_path / 'outputs'}", "epochs=2"]
    pretrained = run(
        str(ROOT / "configs/mammo-byol.yaml"),
        [*where, *TINY, "augment.random_resized_crop=[32,32]", "byol.hidden_dim=64"]
        + ["byol.projection_dim=32", "loader.drop_last=false"],
        quiet=True,
    )
    assert 0.0 <= pretrained["val_knn_accuracy"] <= 1.0
    backbone = tmp_path / "outputs/mammo-byol/best"
    capsys.readouterr()
    tuned = run(
        str(ROOT / "configs/mammo-tiles.yaml"),
        [*where, *TINY, "augment.random_crop=[32,32]", f"finetune.checkpoint={backbone}"]
        + ["finetune.freeze_backbone_epochs=1"],
    )
    shown = capsys.readouterr().out
    assert "the online backbone of a BYOL checkpoint: loaded" in shown
    assert "val_auroc_macro" in tuned
    out = tmp_path / "predictions.json"
    medshard = str(Path(sys.executable).with_name("medshard"))
    result = subprocess.run(
        [medshard, "predict", str(tmp_path / "outputs/mammo-tiles"), "--dataset"]
        + [str(tmp_path / "ds"), "--split", "test", "--output-json", str(out), "--quiet"]
        + ["--threshold", "mass=0.4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    jsonschema.validate(document, json.loads((ROOT / "docs/predictions.schema.json").read_text()))
    test_keys = {
        r["key"] for r in open_dataset(tmp_path / "ds").manifest.to_pylist() if r["split"] == "test"
    }
    assert {r["input"] for r in document["records"]} == test_keys
    assert document["thresholds"]["mass"] == 0.4
    assert "test_auroc_macro" in document["metrics"]
