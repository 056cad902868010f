"""A tiny training setup on real pixels: gray 8-bit crops of scikit-image's sample images,
labelled by the picture they come from, and a small CNN named by `module:callable`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

from tests.conftest import ingest, write_table

PICTURES = {"camera": skimage.data.camera, "coins": skimage.data.coins, "moon": skimage.data.moon}
TINY = "tests.trainers.real_runs:tiny_cnn"


def real_gray_dataset(root: Path, per_class: int = 5, size: int = 32) -> Path:
    """Ingest `per_class` crops of each picture (an odd total), written as 8-bit PNGs under
    `root/raw`, into `root/ds`; returns the dataset folder."""
    raw, rows = root / "raw", []
    for label, picture in PICTURES.items():
        pixels = picture()
        for i in range(per_class):
            name = f"tiles/{label}_{i}.png"
            (raw / name).parent.mkdir(parents=True, exist_ok=True)
            y, x = 37 * i + 20, 29 * i + 40
            Image.fromarray(np.ascontiguousarray(pixels[y : y + size, x : x + size])).save(
                raw / name
            )
            rows.append([name, label])
    table = write_table(raw / "labels.csv", ["image_path", "picture"], rows)
    ingest(table, root / "ds", label_col="picture")
    return root / "ds"


def tiny_cnn(spatial_dims: int, in_channels: int, out_channels: int) -> torch.nn.Module:
    """One convolution, a pool and a linear head: fast enough for many runs on a CPU."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(64, out_channels),
    )


def not_a_module(spatial_dims: int, in_channels: int, out_channels: int) -> dict:
    """A factory that returns weights instead of a network, as a user's mistake would."""
    return {"weight": torch.zeros(out_channels, in_channels)}


def write_config(path: Path, dataset: Path, output_dir: Path, *, lr: float = 0.01) -> Path:
    """A classification config for `real_gray_dataset` with the tiny CNN."""
    path.write_text(
        f"name: gray\ndataset: {dataset}\ntask: classification\noutput_dir: {output_dir}\n"
        "loader: {batch_size: 4, num_workers: 0, backend: torch}\n"
        f"model: {{name: '{TINY}'}}\n"
        f"optim: {{lr: {lr}, schedule: plateau}}\n"
        "epochs: 2\n"
    )
    return path


class Interrupting(torch.nn.Module):
    """`tiny_cnn` with dropout (so that resuming must restore the RNG too), which sends
    its own process `signal` at its `at`-th forward pass in training mode, or in
    evaluation mode with `during="validation"` (0: never), on rank `rank` only: a kill at
    a chosen step, with no timing."""

    def __init__(self, net: torch.nn.Module, signal: str, at: int, during: str, rank: int):
        super().__init__()
        self.net, self.dropout = net, torch.nn.Dropout(0.2)
        self.signal, self.at, self.during, self.rank, self.calls = signal, at, during, rank, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training == (self.during == "training"):
            self.calls += 1
            if self.calls == self.at and int(os.environ.get("RANK", 0)) == self.rank:
                os.kill(os.getpid(), getattr(signal, self.signal))
        return self.net(self.dropout(x))


def interrupting_cnn(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    signal: str = "SIGTERM",
    at: int = 0,
    during: str = "training",
    rank: int = 0,
) -> torch.nn.Module:
    return Interrupting(tiny_cnn(spatial_dims, in_channels, out_channels), signal, at, during, rank)
