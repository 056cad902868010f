"""`medshard demo`: the whole engine on small synthetic data in the workloads' real raw
layouts: synthesise, ingest, verify, train a 2D and a 3D model, run the mammography chain
(a few BYOL steps, fine-tuning from that backbone, predict on the test split), benchmark
against the lazy baselines, and end with one summary table."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from medshard.commands.report import ingest_table
from medshard.ingest.images import ImageIngestOptions, ingest_images
from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff
from medshard.ingest.video import VideoIngestOptions, ingest_video
from medshard.shards.verify import verify_dataset
from medshard.synth.images import MAMMO_CLASSES, synth_embryo_stage, synth_mammo_tiles
from medshard.synth.video import synth_ivf_timelapse
from medshard.synth.volumes import synth_fomo_mri, synth_nuclei_3d

__all__ = ["run_demo"]

WORKERS = 2


def _workloads(raw: Path, data: Path, scale: float) -> dict:
    """name -> (synthesise, ingest options factory, ingest function); `scale` sizes the
    synthetic datasets (1: the demo's own)."""
    common = dict(workers=WORKERS, overwrite=True)

    def n(count: int, least: int = 4) -> int:
        return max(least, round(count * scale))

    return {
        "embryo-stage": (
            lambda: synth_embryo_stage(raw / "embryo-stage", n=n(160), size=96),
            lambda t: ImageIngestOptions(
                table=t,
                out=data / "embryo-stage",
                image_col="image_path",
                label_col="stage",
                group_col="embryo_id",
                **common,
            ),
            ingest_images,
        ),
        "mammo-tiles": (
            # at least 80 tiles: about ten patients, so five folds each find one
            lambda: synth_mammo_tiles(raw / "mammo-tiles", n=n(160, least=80), size=256),
            lambda t: ImageIngestOptions(
                table=t,
                out=data / "mammo-tiles",
                image_col="tile_path",
                label_cols=MAMMO_CLASSES,
                group_col="patient_id",
                test_fraction=0.1,
                folds=5,
                **common,
            ),
            ingest_images,
        ),
        "nuclei-3d": (
            lambda: synth_nuclei_3d(raw / "nuclei-3d", n=n(16), shape=(32, 64, 64)),
            lambda t: TiffIngestOptions(
                root=t.parent,
                labels=t,
                out=data / "nuclei-3d",
                crops=(32, 32, 32),
                patch_size=(32, 32, 32),
                **common,
            ),
            ingest_tiff,
        ),
        "fomo-mri": (
            lambda: synth_fomo_mri(raw / "fomo-mri", n=n(16), shape=(64, 64, 64)),
            lambda t: NiftiIngestOptions(
                table=t,
                out=data / "fomo-mri",
                modalities=("flair", "dwi", "adc"),
                mask_col="seg",
                label_col="diagnosis",
                key_col="subject",
                patch_size=(32, 32, 32),
                **common,
            ),
            ingest_nifti,
        ),
        "ivf-timelapse": (
            lambda: synth_ivf_timelapse(raw / "ivf-timelapse", n=n(8), frames=16, size=96),
            lambda t: VideoIngestOptions(
                table=t,
                out=data / "ivf-timelapse",
                video_col="video_path",
                label_col="outcome",
                group_col="embryo_id",
                clip_len=8,
                clip_stride=4,
                **common,
            ),
            ingest_video,
        ),
    }


def _train(name: str, dataset: Path, out: Path, console: Console) -> dict:
    from medshard.trainers.config import TrainConfig
    from medshard.trainers.loop import train

    if name == "embryo-stage":
        raw = dict(
            task="classification",
            augment={
                "resize": [64, 64],
                "flip_h": True,
                "flip_v": True,
                "normalize": "imagenet",
                "channels": 3,
            },
            model={"name": "resnet18"},
            loss={"label_smoothing": 0.1},
            epochs=4,
            loader={"batch_size": 16, "num_workers": WORKERS},
        )
    else:
        raw = dict(
            task="segmentation",
            model={"name": "unet", "kwargs": {"channels": [8, 16, 32], "strides": [2, 2]}},
            augment={"flip_axes": [0, 1, 2], "gamma": [0.8, 1.25]},
            epochs=8,
            optim={"lr": 0.003},
            loader={
                "batch_size": 4,
                "num_workers": WORKERS,
                "patch_size": [32, 32, 32],
                "samples_per_volume": 8,
                "foreground_prob": 0.7,
            },
        )
    config = TrainConfig.model_validate(
        {"name": name, "dataset": str(dataset), "output_dir": str(out), **raw}
    )
    shutil.rmtree(out / name, ignore_errors=True)  # the demo's own run of a previous demo
    console.rule(f"train {name} ({config.task}, {config.model.name})")
    return train(config)


def _mammo_chain(dataset: Path, out: Path, console: Console) -> dict:
    """BYOL pretraining, multi-label fine-tuning from its backbone (frozen for the first
    epoch), and `medshard predict` on the test split: the chain of docs/howto-mammo-byol.md
    at the demo's size. Returns the fine-tuned run's metrics and the predictions."""
    from medshard.trainers.config import TrainConfig
    from medshard.trainers.loop import train
    from medshard.trainers.predict import open_run, predict, run_copy
    from medshard.trainers.predict_inputs import dataset_inputs
    from medshard.trainers.predict_records import write_document

    common = dict(
        dataset=str(dataset),
        output_dir=str(out),
        model={"name": "resnet18"},
        loader={"batch_size": 16, "num_workers": WORKERS, "backend": "torch"},
    )
    byol = TrainConfig.model_validate(
        dict(
            name="mammo-byol",
            task="byol",
            augment={
                "random_resized_crop": [48, 48],
                "rrc_scale": [0.2, 1.0],
                "flip_h": True,
                "flip_v": True,
                "rot90": True,
            },
            byol={"hidden_dim": 256, "projection_dim": 64},
            optim={"lr": 0.002, "grad_clip": None},
            epochs=2,
            **common,
        )
    )
    tiles = TrainConfig.model_validate(
        dict(
            name="mammo-tiles",
            task="multilabel",
            augment={"resize": [48, 48], "flip_h": True, "flip_v": True},
            finetune={
                "checkpoint": str(out / "mammo-byol" / "best"),
                "freeze_backbone_epochs": 1,
                "backbone_lr": 0.0003,
                "head_lr": 0.003,
            },
            loss={"label_smoothing": 0.05, "pos_weight": "auto"},
            epochs=2,
            **common,
        )
    )
    for name in ("mammo-byol", "mammo-tiles"):
        shutil.rmtree(out / name, ignore_errors=True)  # the demo's own runs of a previous demo
    console.rule("mammo-tiles: BYOL pretraining (byol, resnet18)")
    pretrained = train(byol)
    console.rule("mammo-tiles: fine-tune from the BYOL backbone (multilabel, resnet18)")
    metrics = train(tiles)
    console.rule("mammo-tiles: medshard predict on the test split")
    run = open_run(out / "mammo-tiles")
    document = predict(run, dataset_inputs(dataset, "test", False, run_copy(run)), show=True)
    write_document(document, out / "mammo-tiles" / "predictions-test.json")
    done = document["summary"]
    console.print(
        f"{done['predicted']} tiles predicted into {out / 'mammo-tiles' / 'predictions-test.json'}"
        f"; per label: {done['counts']}"
    )
    return {"pretrained": pretrained, "metrics": metrics, "predictions": document}


def _benchmark(dataset: Path) -> tuple[float | None, float]:
    """(baseline, engine) samples/s on the train split, decode and batch only, one timed
    run after a warm-up: `medshard bench` on the demo's dataset."""
    from medshard.bench import bench_dataset

    engine, baseline = bench_dataset(
        dataset, workers=WORKERS, repetitions=1, patch_size=(32, 32, 32), clip_len=8
    )
    return (baseline.samples_per_s if baseline else None), engine.samples_per_s


def _sheets(datasets: Path, out: Path, console: Console) -> None:
    """Contact sheets of a 2D and a volume workload: `medshard inspect DATASET --show N`."""
    from medshard.sheets import render_sheet

    console.rule("look at the data: contact sheets")
    for name, show in (("mammo-tiles", 8), ("fomo-mri", 4)):
        sheet = render_sheet(datasets / name, out / f"{name}.png", show=show)
        console.print(f"{name}: {sheet.path} ({len(sheet.keys)} samples)")


def run_demo(out: Path | None, console: Console, scale: float = 1.0) -> dict[str, dict]:
    """Run everything under `out` (kept), or a temporary folder (removed); returns the
    summary's figures per workload."""
    if out is None:
        with tempfile.TemporaryDirectory(prefix="medshard-demo-") as tmp:
            return _run(Path(tmp), console, kept=False, scale=scale)
    return _run(Path(out), console, kept=True, scale=scale)


def _run(out: Path, console: Console, kept: bool, scale: float) -> dict[str, dict]:
    started = time.perf_counter()
    rows: dict[str, dict] = {}
    tables: dict[str, Path] = {}
    for name, (synth, options, ingest) in _workloads(out / "raw", out / "datasets", scale).items():
        console.rule(name)
        tables[name] = synth()
        console.print(f"synthesised {tables[name].parent}")
        result = ingest(options(tables[name]))
        console.print(ingest_table(result))
        report = verify_dataset(result.out)
        rows[name] = {
            "samples": result.samples,
            "size": decimal(result.dataset_bytes),
            "ingest": f"{result.mb_per_s:.1f} MB/s",
            "verify": "OK" if report.ok else f"{len(report.problems)} problems",
            "verified": report.ok,
            "dataset": str(result.out),
        }
    _sheets(out / "datasets", out / "sheets", console)
    for name, metric in (("embryo-stage", "val_accuracy"), ("fomo-mri", "val_dice")):
        metrics = _train(name, out / "datasets" / name, out / "outputs", console)
        rows[name]["metric"] = (metric, metrics[metric])
        rows[name]["trained"] = f"{metric.removeprefix('val_')} {metrics[metric]:.2f}"
    chain = _mammo_chain(out / "datasets" / "mammo-tiles", out / "outputs", console)
    knn, auroc = chain["pretrained"]["val_knn_accuracy"], chain["metrics"]["val_auroc_macro"]
    rows["mammo-tiles"]["metric"] = ("val_auroc_macro", auroc)
    rows["mammo-tiles"]["predicted"] = chain["predictions"]["summary"]["predicted"]
    rows["mammo-tiles"]["trained"] = (
        f"byol knn {knn:.2f} -> auroc {auroc:.2f}, {rows['mammo-tiles']['predicted']} predicted"
    )
    console.rule("benchmark: lazy per-file loader vs medshard (decode and batch)")
    for name in ("mammo-tiles", "fomo-mri", "ivf-timelapse"):
        base, engine = _benchmark(out / "datasets" / name)
        rows[name]["samples_per_s"] = (base, engine)
        rows[name]["bench"] = (
            f"{base:.0f} -> {engine:.0f}/s ({engine / base:.1f}x)"
            if base is not None
            else f"{engine:.0f}/s (no baseline: the sources cannot be reached)"
        )
        console.print(f"{name}: {rows[name]['bench']}")
    summary = Table(title="medshard demo", title_justify="left")
    for column in (
        "workload",
        "samples",
        "on disk",
        "ingest",
        "verify",
        "trained",
        "loader (lazy -> medshard)",
    ):
        summary.add_column(column)
    for name, row in rows.items():
        summary.add_row(
            name,
            str(row["samples"]),
            row["size"],
            row["ingest"],
            row["verify"],
            row.get("trained", ""),
            row.get("bench", ""),
        )
    console.rule("summary")
    console.print(summary)
    where = (
        f"everything is in {out}"
        if kept
        else "outputs removed (medshard demo --out DIR keeps them)"
    )
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s; {where}")
    return rows
