"""Synthetic 2D workloads: embryo-stage (JPEG + stage CSV) and mammo-tiles (16-bit PNG +
0/1 label columns), laid out as users have them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["EMBRYO_STAGES", "MAMMO_CLASSES", "synth_embryo_stage", "synth_mammo_tiles"]

EMBRYO_STAGES = ("cleavage", "morula", "blastocyst")
MAMMO_CLASSES = ("mass", "calcification", "architectural_distortion")


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency texture in [0, 1]: coarse noise upsampled bicubically."""
    coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
    return np.asarray(coarse.resize((size, size), Image.BICUBIC)).clip(0, 1)


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _embryo(rng: np.random.Generator, stage: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2 + rng.normal(0, size * 0.02, 2)
    radius = size * rng.uniform(0.30, 0.36)
    image = 0.55 + 0.1 * _smooth_noise(rng, size, 8)
    dist = np.hypot(yy - c[0], xx - c[1])
    image[np.abs(dist - radius * 1.08) < size * 0.012] = 0.85  # zona pellucida
    if stage == "cleavage":
        cells = int(rng.integers(2, 9))
        r_cell = radius * 0.9 / np.sqrt(cells) * 1.1
        for _ in range(cells):
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, radius - r_cell)
            disc = _disc(yy, xx, c[0] + d * np.sin(a), c[1] + d * np.cos(a), r_cell)
            image[disc] = 0.35
            image[
                disc & ~_disc(yy, xx, c[0] + d * np.sin(a), c[1] + d * np.cos(a), r_cell * 0.9)
            ] = 0.15
    elif stage == "morula":
        image[dist < radius * 0.95] = 0.3
        for _ in range(int(rng.integers(16, 32))):
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, radius * 0.8)
            ring = _disc(yy, xx, c[0] + d * np.sin(a), c[1] + d * np.cos(a), radius * 0.18)
            image[
                ring & ~_disc(yy, xx, c[0] + d * np.sin(a), c[1] + d * np.cos(a), radius * 0.16)
            ] = 0.12
    else:  # blastocyst: a thin cell ring around a fluid cavity, and an inner cell mass
        image[np.abs(dist - radius * 0.9) < size * 0.03] = 0.25
        a = rng.uniform(0, 2 * np.pi)
        image[
            _disc(
                yy,
                xx,
                c[0] + radius * 0.55 * np.sin(a),
                c[1] + radius * 0.55 * np.cos(a),
                radius * 0.3,
            )
        ] = 0.2
    image += rng.normal(0, 0.03, image.shape)
    gray = (image.clip(0, 1) * 255).astype(np.uint8)
    tint = np.array([1.0, 0.97, 0.92])  # the warm cast of Hoffman modulation contrast optics
    return (gray[..., None] * tint).astype(np.uint8)


def synth_embryo_stage(out: str | Path, n: int = 300, seed: int = 0, size: int = 256) -> Path:
    """Write `out/images/E####_t##.jpg` and `out/labels.csv` (image_path,stage,embryo_id)."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    embryo = 0
    while len(rows) < n:
        embryo += 1
        stage = EMBRYO_STAGES[int(rng.integers(len(EMBRYO_STAGES)))]
        for t in range(min(int(rng.integers(1, 4)), n - len(rows))):
            name = f"images/E{embryo:04d}_t{t:02d}.jpg"
            Image.fromarray(_embryo(rng, stage, size)).save(out / name, quality=90)
            rows.append((name, stage, f"E{embryo:04d}"))
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_path", "stage", "embryo_id"])
        writer.writerows(rows)
    return out / "labels.csv"


def _mammo_tile(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    tissue = 0.25 + 0.35 * _smooth_noise(rng, size, 6) + 0.1 * _smooth_noise(rng, size, 24)
    if labels[0]:  # mass: a dense, blurred blob
        cy, cx = rng.uniform(size * 0.25, size * 0.75, 2)
        r = rng.uniform(size * 0.08, size * 0.18)
        tissue += 0.35 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    if labels[1]:  # calcifications: a cluster of tiny bright specks
        cy, cx = rng.uniform(size * 0.2, size * 0.8, 2)
        for _ in range(int(rng.integers(5, 15))):
            py, px = rng.normal((cy, cx), size * 0.04)
            tissue[_disc(yy, xx, py, px, rng.uniform(1.0, 2.2))] = 0.95
    if labels[2]:  # architectural distortion: spiculated lines radiating from a point
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        angle = np.arctan2(yy - cy, xx - cx)
        spokes = np.cos(angle * int(rng.integers(6, 12))) > 0.97
        tissue += 0.2 * (spokes & (np.hypot(yy - cy, xx - cx) < size * 0.35))
    tissue += rng.normal(0, 0.02, tissue.shape)
    return (tissue.clip(0, 1) * 65535).astype(np.uint16)


def synth_mammo_tiles(out: str | Path, n: int = 400, seed: int = 0, size: int = 256) -> Path:
    """Write 16-bit PNG tiles `out/tiles/P####/P####_<view>_###.png` and `out/labels.csv`
    (tile_path, one 0/1 column per class, patient_id)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    patient = 0
    while len(rows) < n:
        patient += 1
        pid = f"P{patient:04d}"
        (out / "tiles" / pid).mkdir(parents=True, exist_ok=True)
        for i in range(min(int(rng.integers(4, 13)), n - len(rows))):
            labels = (rng.random(len(MAMMO_CLASSES)) < (0.35, 0.3, 0.2)).astype(int)
            view = ("L_CC", "L_MLO", "R_CC", "R_MLO")[i % 4]
            name = f"tiles/{pid}/{pid}_{view}_{i:03d}.png"
            Image.fromarray(_mammo_tile(rng, labels, size)).save(out / name)
            rows.append((name, *labels.tolist(), pid))
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tile_path", *MAMMO_CLASSES, "patient_id"])
        writer.writerows(rows)
    return out / "labels.csv"
