"""`medshard demo` at a small scale: every workload is ingested and verified, both models
train to finite metrics, the sheets are drawn, and each speed-up is the ratio of the two
measured rates."""

import math
import re
from pathlib import Path

from rich.console import Console

from medshard.demo import run_demo

WORKLOADS = ["embryo-stage", "mammo-tiles", "nuclei-3d", "fomo-mri", "ivf-timelapse"]


def test_the_demo_runs_the_whole_pipeline_and_reports_measured_figures(tmp_path):
    console = Console(record=True, width=160)
    rows = run_demo(tmp_path / "demo", console, scale=0.25)
    assert list(rows) == WORKLOADS
    assert all(row["verified"] for row in rows.values())
    for name in ("embryo-stage", "fomo-mri"):
        _, value = rows[name]["metric"]
        assert math.isfinite(value) and 0 <= value <= 1
    assert rows["mammo-tiles"]["predicted"] > 0  # BYOL, fine-tuning, predict
    for name in ("mammo-tiles", "fomo-mri", "ivf-timelapse"):
        base, engine = rows[name]["samples_per_s"]
        assert base > 0 and engine > 0
        shown = re.search(r"\(([0-9.]+)x\)", rows[name]["bench"]).group(1)
        assert float(shown) == round(engine / base, 1)
    for sheet in ("mammo-tiles.png", "fomo-mri.png"):
        assert (tmp_path / "demo" / "sheets" / sheet).stat().st_size > 10_000
    assert "medshard demo" in console.export_text()


def test_the_demo_chains_byol_finetuning_and_predict_on_the_mammography_tiles(tmp_path, capsys):
    import json

    import jsonschema

    from medshard.demo import _mammo_chain
    from medshard.ingest.images import ImageIngestOptions, ingest_images
    from medshard.shards.reader import open_dataset
    from medshard.synth.images import MAMMO_CLASSES, synth_mammo_tiles

    table = synth_mammo_tiles(tmp_path / "raw", n=32, size=48)
    options = ImageIngestOptions(
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
    ingest_images(options)
    console = Console(record=True, width=160)
    chain = _mammo_chain(tmp_path / "ds", tmp_path / "outputs", console)
    assert 0.0 <= chain["pretrained"]["val_knn_accuracy"] <= 1.0
    assert "the online backbone of a BYOL checkpoint: loaded" in capsys.readouterr().out
    written = tmp_path / "outputs/mammo-tiles/predictions-test.json"
    document = json.loads(written.read_text())
    schema = json.loads((Path(__file__).parents[1] / "docs/predictions.schema.json").read_text())
    jsonschema.validate(document, schema)
    rows = open_dataset(tmp_path / "ds").manifest.to_pylist()
    assert document["summary"]["predicted"] == sum(r["split"] == "test" for r in rows) > 0
