"""Synthetic ivf-timelapse: embryo time-lapse sequences as mp4 files (written with PyAV)
and as frame folders, with `index.csv` (video_path, outcome, embryo_id)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IVF_OUTCOMES", "synth_ivf_timelapse", "write_mp4"]

IVF_OUTCOMES = ("arrested", "blastocyst")


def _frame(rng, size: int, cells: int, cavity: float, positions: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    centre = size / 2
    radius = size * 0.33
    image = np.full((size, size), 150.0, np.float32)
    dist = np.hypot(yy - centre, xx - centre)
    image[np.abs(dist - radius * 1.08) < 2] = 215  # zona pellucida
    r_cell = radius * 0.95 / np.sqrt(cells)
    for cy, cx in positions[:cells] * (radius - r_cell) + centre:
        d = np.hypot(yy - cy, xx - cx)
        image[d <= r_cell] = 95
        image[np.abs(d - r_cell) < 1.2] = 45
    if cavity > 0:  # the blastocoel opens as a bright cavity inside a ring of cells
        image[dist < radius * cavity] = 175
    image += rng.normal(0, 4, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def _sequence(rng, outcome: str, frames: int, size: int) -> list[np.ndarray]:
    positions = rng.uniform(-1, 1, (16, 2)) / np.sqrt(2)
    divide_every = frames / 5
    out = []
    for t in range(frames):
        cells = min(2 ** int(t / divide_every), 4 if outcome == "arrested" else 16)
        cavity = max(0.0, (t / frames - 0.75) * 3) if outcome == "blastocyst" else 0.0
        out.append(_frame(rng, size, cells, cavity, positions))
    return out


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 4) -> None:
    """Encode grayscale frames as an H.264 (yuv420p) mp4 with PyAV."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape
        stream.pix_fmt = "yuv420p"
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.stack([array] * 3, axis=-1), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def synth_ivf_timelapse(
    out: str | Path, n: int = 12, seed: int = 0, frames: int = 24, size: int = 160
) -> Path:
    """Write `out/videos/E####.mp4` (even sequences) and `out/frames/E####/frame_{t}.png`
    (odd ones), and `out/index.csv`."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        outcome = IVF_OUTCOMES[int(rng.random() < 0.5)]
        sequence = _sequence(rng, outcome, frames, size)
        name = f"E{i:04d}"
        if i % 2 == 0:
            (out / "videos").mkdir(parents=True, exist_ok=True)
            write_mp4(out / "videos" / f"{name}.mp4", sequence)
            rows.append((f"videos/{name}.mp4", outcome, name))
        else:
            folder = out / "frames" / name
            folder.mkdir(parents=True, exist_ok=True)
            for t, array in enumerate(sequence):
                Image.fromarray(array).save(folder / f"frame_{t}.png")
            rows.append((f"frames/{name}", outcome, name))
    with open(out / "index.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_path", "outcome", "embryo_id"])
        writer.writerows(rows)
    return out / "index.csv"
