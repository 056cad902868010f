"""ivf-timelapse: per clip, open the video with PyAV and decode from its start to the
clip's last frame (frame folders: read the clip's frame files), then resize."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset


class LazyVideoClips(Dataset):
    def __init__(
        self,
        videos: list[tuple[Path, int, int]],
        clip_len: int,
        per_video: int,
        size: tuple[int, int],
        transform: Callable,
        seed: int = 0,
    ):
        self.videos, self.clip_len, self.per_video = (
            videos,
            clip_len,
            per_video,
        )  # (path, frames, label)
        self.size, self.transform, self.seed = size, transform, seed

    def __len__(self) -> int:
        return len(self.videos) * self.per_video

    def _frames(self, path: Path, start: int) -> list[np.ndarray]:
        if path.is_dir():
            files = sorted(path.iterdir(), key=lambda p: int(p.stem.split("_")[-1]))
            return [np.asarray(Image.open(f)) for f in files[start : start + self.clip_len]]
        frames = []
        with av.open(str(path)) as container:
            for number, frame in enumerate(container.decode(video=0)):
                if number >= start:
                    frames.append(frame.to_ndarray(format="gray"))
                if len(frames) == self.clip_len:
                    break
        return frames

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        """Grayscale, letterboxed to the frame size (aspect ratio kept, zero padding)."""
        height, width = self.size
        gray = Image.fromarray(frame).convert("L")
        return np.asarray(ImageOps.pad(gray, (width, height), method=Image.BILINEAR, color=0))

    def __getitem__(self, index: int) -> dict:
        path, count, label = self.videos[index // self.per_video]
        start = int(
            np.random.default_rng([self.seed, index]).integers(0, count - self.clip_len + 1)
        )
        clip = np.stack([self._fit(frame) for frame in self._frames(path, start)])
        sample = {"key": f"{path.name}#{index}", "image": clip[:, None], "label": np.asarray(label)}
        return self.transform(sample, index, 0)
