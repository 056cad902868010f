"""The five workloads as benchmark cases: synthesise the raw layout at a realistic size
(brain MRIs of 160 x 192 x 160 with 3 modalities and a mask, nuclei stacks of 80 slices
of 512 x 512, time-lapse videos of 300 frames), ingest it, then build the engine's loader
and the lazy baseline with the same augmentation, batch size and parallelism.

Each case runs twice: `augmented` applies the workload's training augmentation (the same
code on both sides, nnU-Net's probabilities for the 3D intensity transforms); `plain` only
decodes and batches (no random ops, no normalisation), which isolates what the engine
replaces: opening, reading and decoding files."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import DataLoader

from medshard.bench.baselines import (
    LazyImageFiles,
    LazyNiftiPatches,
    LazySliceCrops,
    LazyVideoClips,
)
from medshard.codecs import IMAGE_EXTENSIONS, decode_image
from medshard.ingest.images import ImageIngestOptions, ingest_images
from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff
from medshard.ingest.video import VideoIngestOptions, ingest_video
from medshard.ingest.windows import crop_origins
from medshard.loaders import Augment2D, Augment3D, build_loader
from medshard.loaders.frame_format import dataset_channels, stats_for, unit_stats
from medshard.loaders.transforms import FrameTransform, VolumeTransform
from medshard.shards.layout import key_from_path
from medshard.shards.reader import open_dataset
from medshard.synth.images import MAMMO_CLASSES, synth_embryo_stage, synth_mammo_tiles
from medshard.synth.video import synth_ivf_timelapse
from medshard.synth.volumes import synth_fomo_mri, synth_nuclei_3d

__all__ = ["WORKERS", "WORKLOADS", "Workload", "decode_ceiling", "decode_rates", "rows_of"]

WORKERS = 2  # DataLoader workers of the baselines and the 2D engine; threads of the 3D engine
PREFETCH = 4  # batches each DataLoader worker keeps ready, as the engine's DataLoader does
CROP = (80, 80, 80)
NUCLEI_SHAPE = (80, 512, 512)
CROPS_PER_STACK = 36  # the 80^3 crops that tile an 80 x 512 x 512 stack
PATCH = (64, 64, 64)
MRI_SHAPE = (160, 192, 160)
PATCHES_PER_VOLUME = 4
MRI_MODALITIES = ("flair", "dwi", "adc")
FRAMES = 300
CLIP_LEN = 8
CLIPS_PER_VIDEO = 16  # of the 37 clips of 8 frames that fit in 300


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def rows_of(table: Path) -> int:
    return len(_read_csv(table))


def _loader(dataset, batch_size: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=WORKERS,
        persistent_workers=True,
        prefetch_factor=PREFETCH,
    )


def _options(out: Path, workers: int = WORKERS) -> dict:
    return dict(out=out, workers=workers, overwrite=True, quiet=True, val_fraction=0.0)


@dataclass(frozen=True)
class Workload:
    name: str
    what: str  # what one sample is
    batch_size: int
    augment: Augment2D | Augment3D  # the workload's training augmentation
    plain: Augment2D | Augment3D  # decode and batch only
    synth: Callable[[Path, int], Path]  # (raw dir, scale) -> table
    ingest: Callable[[Path, Path, int], object]  # (table, dataset dir, workers) -> result
    engine_options: dict  # build_loader options beyond batch size and augmentation
    baseline_dataset: Callable[[Path, Path, Callable], object]  # (table, ds, transform)
    image_column: str | None = None  # 2D workloads: for the decode-bound ceiling
    volumes: bool = False  # 3D: ingest on 1 and 2 workers, memory at N and 4N
    # 2D workloads: each kind of training copy measured (name -> ingest options)
    copies: dict[str, dict] = field(default_factory=dict)

    def engine(self, ds: Path, augmented: bool, **options):
        """The engine's loader of `ds`; `options`: build_loader's beyond the workload's."""
        return build_loader(
            ds,
            "train",
            batch_size=self.batch_size,
            training=augmented,
            shuffle=True,
            augment=self.augment if augmented else self.plain,
            num_workers=WORKERS,
            **self.engine_options | options,
        )

    def baseline(self, table: Path, ds: Path, augmented: bool) -> DataLoader:
        config = self.augment if augmented else self.plain
        dataset = open_dataset(ds)
        if isinstance(config, Augment2D):
            channels = config.channels or dataset_channels(dataset)
            stats = stats_for(unit_stats(dataset), channels)
            transform = FrameTransform(config, 0, augmented, stats, channels)
        else:
            transform = VolumeTransform(config, 0, augmented, dataset.card.stats.model_dump())
        return _loader(self.baseline_dataset(table, ds, transform), self.batch_size)


def _embryo_files(table: Path, ds: Path, transform) -> LazyImageFiles:
    rows = _read_csv(table)
    classes = sorted({r["stage"] for r in rows})
    return LazyImageFiles(
        table.parent,
        [r["image_path"] for r in rows],
        [classes.index(r["stage"]) for r in rows],
        transform,
        "label",
    )


def _mammo_files(table: Path, ds: Path, transform) -> LazyImageFiles:
    rows = _read_csv(table)
    labels = [[float(r[c]) for c in MAMMO_CLASSES] for r in rows]
    return LazyImageFiles(table.parent, [r["tile_path"] for r in rows], labels, transform, "labels")


def _nuclei_crops(table: Path, ds: Path, transform) -> LazySliceCrops:
    rows = _read_csv(table)
    classes = sorted({r["class"] for r in rows})
    shapes = {r["key"]: r["shape"] for r in open_dataset(ds).manifest.to_pylist() if r["zarr_path"]}
    items = [
        (table.parent / r["sample_id"], origin, classes.index(r["class"]))
        for r in rows
        for origin in crop_origins(shapes[r["sample_id"]][1:], CROP)
    ]
    return LazySliceCrops(items, CROP, transform)


def _mri_patches(table: Path, ds: Path, transform) -> LazyNiftiPatches:
    rows = _read_csv(table)
    classes = sorted({r["diagnosis"] for r in rows})
    subjects = [
        (
            [table.parent / r[m] for m in MRI_MODALITIES],
            table.parent / r["seg"],
            classes.index(r["diagnosis"]),
        )
        for r in rows
    ]
    return LazyNiftiPatches(subjects, PATCH, PATCHES_PER_VOLUME, transform)


def _video_clips(table: Path, ds: Path, transform) -> LazyVideoClips:
    rows = _read_csv(table)
    classes = sorted({r["outcome"] for r in rows})
    frames = {
        r["key"]: r["shape"][0] for r in open_dataset(ds).manifest.to_pylist() if r["zarr_path"]
    }
    videos = [
        (
            table.parent / r["video_path"],
            frames[key_from_path(r["video_path"])],
            classes.index(r["outcome"]),
        )
        for r in rows
    ]
    return LazyVideoClips(videos, CLIP_LEN, CLIPS_PER_VIDEO, (128, 128), transform)


VOLUME_AUGMENT = Augment3D(
    flip_axes=(0, 1, 2),
    rot90_xy=True,
    gamma=(0.7, 1.5),
    gamma_p=0.3,  # nnU-Net's probabilities
    contrast=(0.75, 1.25),
    contrast_p=0.15,
    noise_std=0.1,
    noise_p=0.1,
)
VOLUME_PLAIN = Augment3D(normalize="none")

WORKLOADS = {
    w.name: w
    for w in (
        Workload(
            "embryo-stage",
            "256x256 RGB JPEG -> 3x224x224",
            32,
            augment=Augment2D(
                resize=(224, 224),
                flip_h=True,
                flip_v=True,
                brightness=0.1,
                contrast=0.1,
                normalize="imagenet",
                channels=3,
            ),
            plain=Augment2D(resize=(224, 224), normalize="none", channels=3),
            synth=lambda raw, scale: synth_embryo_stage(raw, n=300 * scale),
            ingest=lambda table, ds, workers=WORKERS, **copies: ingest_images(
                ImageIngestOptions(
                    table=table,
                    image_col="image_path",
                    label_col="stage",
                    group_col="embryo_id",
                    **_options(ds, workers),
                    **copies,
                )
            ),
            engine_options={},
            baseline_dataset=_embryo_files,
            image_column="image_path",
            # copies at the training size: the resize is made once, at ingest
            copies={
                "raw": dict(train_size=(224, 224)),
                "jpeg": dict(train_size=(224, 224), train_format="jpeg", train_quality=90),
            },
        ),
        Workload(
            "mammo-tiles",
            "256x256 16-bit PNG -> 1x224x224",
            32,
            augment=Augment2D(
                random_crop=(224, 224),
                flip_h=True,
                flip_v=True,
                rot90=True,
                contrast=0.2,
                brightness=0.1,
                normalize="card",
            ),
            plain=Augment2D(random_crop=(224, 224), normalize="none"),
            synth=lambda raw, scale: synth_mammo_tiles(raw, n=300 * scale),
            ingest=lambda table, ds, workers=WORKERS, **copies: ingest_images(
                ImageIngestOptions(
                    table=table,
                    image_col="tile_path",
                    label_cols=MAMMO_CLASSES,
                    group_col="patient_id",
                    **_options(ds, workers),
                    **copies,
                )
            ),
            engine_options={},
            baseline_dataset=_mammo_files,
            image_column="tile_path",
            # 16-bit tiles: a JPEG copy would cut them to 8 bits, so the encoded copy is PNG
            copies={
                "raw": dict(train_size=(256,)),
                "png": dict(train_size=(256,), train_format="png"),
            },
        ),
        Workload(
            "nuclei-3d",
            "80^3 crop of 80x512x512 stacks (80 TIFF slices each), 36 per stack",
            4,
            augment=VOLUME_AUGMENT,
            plain=VOLUME_PLAIN,
            # more stacks than the baseline's 10-volume cache holds, as real sets have
            synth=lambda raw, scale: synth_nuclei_3d(raw, n=16 * scale, shape=NUCLEI_SHAPE),
            ingest=lambda table, ds, workers=WORKERS: ingest_tiff(
                TiffIngestOptions(
                    root=table.parent, labels=table, patch_size=CROP, **_options(ds, workers)
                )
            ),
            # the same number of 80^3 crops per stack as the baseline's grid, at random places
            engine_options=dict(
                patch_size=CROP, samples_per_volume=CROPS_PER_STACK, foreground_prob=0.0
            ),
            baseline_dataset=_nuclei_crops,
            volumes=True,
        ),
        Workload(
            "fomo-mri",
            "64^3 patch of 3 modalities + mask, 160x192x160 .nii.gz, 4 per volume",
            4,
            augment=VOLUME_AUGMENT,
            plain=VOLUME_PLAIN,
            synth=lambda raw, scale: synth_fomo_mri(raw, n=20 * scale, shape=MRI_SHAPE),
            ingest=lambda table, ds, workers=WORKERS: ingest_nifti(
                NiftiIngestOptions(
                    table=table,
                    modalities=MRI_MODALITIES,
                    mask_col="seg",
                    label_col="diagnosis",
                    key_col="subject",
                    patch_size=PATCH,
                    **_options(ds, workers),
                )
            ),
            engine_options=dict(patch_size=PATCH, samples_per_volume=PATCHES_PER_VOLUME),
            baseline_dataset=_mri_patches,
            volumes=True,
        ),
        Workload(
            "ivf-timelapse",
            "8-frame clip at 128x128 from 300-frame mp4 / PNG folders, 16 per video",
            4,
            augment=Augment2D(flip_h=True, flip_v=True, rot90=True, normalize="card"),
            plain=Augment2D(normalize="none"),
            synth=lambda raw, scale: synth_ivf_timelapse(raw, n=5 * scale, frames=FRAMES),
            ingest=lambda table, ds, workers=WORKERS: ingest_video(
                VideoIngestOptions(
                    table=table,
                    video_col="video_path",
                    label_col="outcome",
                    group_col="embryo_id",
                    **_options(ds, workers),
                )
            ),
            engine_options=dict(
                clip_len=CLIP_LEN, clips_per_video=CLIPS_PER_VIDEO, sequential_clips=False
            ),
            baseline_dataset=_video_clips,
        ),
    )
}


def decode_ceiling(table: Path, column: str, limit: int = 200) -> dict[str, float]:
    """`decode_rates` of the first `limit` images of `table`."""
    paths = [table.parent / r[column] for r in _read_csv(table)[:limit]]
    return decode_rates([(p.read_bytes(), IMAGE_EXTENSIONS[p.suffix.lower()]) for p in paths])


def decode_rates(encoded: list[tuple[bytes, str]], passes: int = 3) -> dict[str, float]:
    """Images per second decoded with the engine's decoder: `ceiling`, one core's rate
    (its CPU time, the best of `passes`) times the cores, the decode-bound ceiling of a CPU
    loader; and `threads`, the wall-clock rate of WORKERS threads doing nothing but
    decode them at once (the best of `passes`), what the cores give together."""
    one_core, threads = 0.0, 0.0
    with ThreadPoolExecutor(WORKERS) as pool:
        for _ in range(passes):
            started = time.thread_time()
            for payload, ext in encoded:
                decode_image(payload, ext)
            one_core = max(one_core, len(encoded) / (time.thread_time() - started))
            started = time.perf_counter()
            list(pool.map(lambda item: decode_image(*item), encoded))
            threads = max(threads, len(encoded) / (time.perf_counter() - started))
    return {"ceiling": one_core * (os.cpu_count() or 1), "threads": threads}
