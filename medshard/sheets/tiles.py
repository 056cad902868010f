"""Tiles: the panels that show one sample, built from arrays (numpy, or zarr arrays read
plane by plane), with intensities mapped to [0, 1] for display."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "FRAMES",
    "Panel",
    "Tile",
    "caption",
    "display_window",
    "frame_indices",
    "frames_tile",
    "image_panel",
    "orthogonal_centre",
    "volume_tile",
]

# Larger 2D images are averaged down in blocks before display: a sheet panel is a few
# hundred pixels wide, and the percentile window needs no more.
MAX_SIDE = 1024
PERCENTILES = (0.5, 99.5)
SAMPLED = 1 << 21  # values the percentiles are taken from, evenly spaced over the array
FRAMES = 8  # frames in the strip of a video or clip


@dataclass(frozen=True)
class Panel:
    """One picture: (H, W) gray or (H, W, 3) RGB in [0, 1], with an optional label mask."""

    image: np.ndarray
    title: str = ""
    mask: np.ndarray | None = None  # (H, W) label values, 0 = background
    aspect: float = 1.0  # physical height / width of one pixel
    origin: Literal["upper", "lower"] = "upper"


@dataclass(frozen=True)
class Tile:
    """One sample: rows of panels, with its key and label(s) written under it."""

    caption: str  # the key, then a line of label(s) when there are any
    rows: tuple[tuple[Panel, ...], ...]

    @property
    def key(self) -> str:
        return self.caption.split("\n", 1)[0]


def caption(key: str, label_names: list[str], target_name: str | None, **labels) -> str:
    """'KEY\\nlabel' from a class index (`label`), a 0/1 vector (`labels`) or a `target`."""
    parts = []
    if labels.get("label") is not None:
        index = int(labels["label"])
        parts.append(label_names[index] if 0 <= index < len(label_names) else str(index))
    if labels.get("labels") is not None:
        on = [name for name, v in zip(label_names, labels["labels"]) if float(v) >= 0.5]
        parts.append("+".join(on) or "none")
    if labels.get("target") is not None:
        parts.append(f"{target_name or 'target'}={float(labels['target']):.4g}")
    return "\n".join([key, ", ".join(parts)]) if parts else key


def display_window(values: np.ndarray, stretch: bool = False) -> tuple[float, float, str]:
    """(low, high, note): 8-bit data as stored (0..255) unless `stretch`; anything else,
    16-bit included, in a window from its 0.5th to 99.5th percentile, named in the note,
    never cut to 8 bits."""
    values = np.asarray(values)
    if values.dtype == np.uint8 and not stretch:
        return 0.0, 255.0, "8-bit"
    values = values.ravel()[:: max(1, values.size // SAMPLED)]
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return 0.0, 1.0, "no finite values"
    low, high = (float(v) for v in np.percentile(finite, PERCENTILES))
    if high <= low:
        high = low + 1.0
    kind = {"u": "uint", "i": "int", "f": "float"}.get(values.dtype.kind, "")
    bits = f"{kind}{values.dtype.itemsize * 8}" if kind else str(values.dtype)
    return low, high, f"{bits} [{low:.4g}, {high:.4g}]"


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    out = (np.asarray(values, dtype=np.float32) - low) / (high - low)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)


def _shrink(image: np.ndarray, limit: int = MAX_SIDE) -> np.ndarray:
    """Block means over the first two axes until both fit `limit`."""
    factor = math.ceil(max(image.shape[:2]) / limit)
    if factor <= 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor, *image.shape[2:])
    return blocks.mean(axis=(1, 3)).astype(image.dtype)


def _colour(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) to (H, W) gray or (H, W, 3): alpha left out, extra channels after the
    first three left out."""
    if image.ndim == 2:
        return image
    if image.shape[2] in (1, 2):
        return image[..., 0]  # gray, or gray + alpha
    return image[..., :3]


def image_panel(
    image: np.ndarray, title: str = "", window: tuple[float, float, str] | None = None
) -> Panel:
    """A 2D image (H, W[, C]) in its stored type; `window` from `display_window` (by
    default that of this image)."""
    shown = _shrink(_colour(np.asarray(image)))
    low, high, note = window or display_window(shown)
    label = f"{title}\n{note}" if title else note
    return Panel(image=_scaled(shown, low, high), title=label)


def orthogonal_centre(shape: tuple[int, int, int], foreground: np.ndarray | None) -> tuple:
    """(z, y, x) the three mid-planes pass through: the mean of the foreground
    coordinates ((n, 3), or a (z, y, x) mask) when there is any, else the volume's centre."""
    if foreground is not None:
        coords = np.argwhere(foreground) if foreground.shape == tuple(shape) else foreground
        if len(coords):
            centre = np.rint(np.asarray(coords, np.float64).mean(axis=0)).astype(int)
            return tuple(int(np.clip(c, 0, n - 1)) for c, n in zip(centre, shape))
    return tuple(n // 2 for n in shape)


def volume_tile(
    image,
    mask,
    *,
    spacing: tuple[float, float, float] | None,
    centre: tuple[int, int, int],
    channel_names: list[str],
    anatomical: bool,
    text: str,
    windows: list[tuple[float, float, str]] | None = None,
    intensity: dict | None = None,
) -> Tile:
    """Three orthogonal planes (rows) of each channel (columns) of a (c, z, y, x) image,
    read plane by plane, through `centre`, in physical aspect, the mask overlaid.
    `anatomical`: RAS+ axes (x right, y anterior, z superior), drawn the radiological way
    up (superior and anterior at the top); otherwise rows go down as in a microscope.
    `windows`: one per channel (default: from these planes, 8-bit ones too, since scanner
    intensities seldom fill 0..255). `intensity`: the per-channel `scale` and `offset` of
    an image stored as int16 codes (value = code * scale + offset)."""
    sz, sy, sx = spacing or (1.0, 1.0, 1.0)
    z, y, x = centre
    names = ("axial", "coronal", "sagittal") if anatomical else ("yx", "zx", "zy")
    cuts = (
        ((slice(None), z), (z,), sy / sx, f"{names[0]} z={z}"),
        ((slice(None), slice(None), y), (slice(None), y), sz / sx, f"{names[1]} y={y}"),
        ((slice(None), slice(None), slice(None), x), (slice(None), slice(None), x), sz / sy,
         f"{names[2]} x={x}"),
    )  # fmt: skip
    planes = [np.asarray(image[index]) for index, *_ in cuts]  # each (c, rows, cols)
    if intensity:
        scale = np.asarray(intensity["scale"], np.float32)[:, None, None]
        offset = np.asarray(intensity["offset"], np.float32)[:, None, None]
        planes = [p.astype(np.float32) * scale + offset for p in planes]
    masks = [None if mask is None else np.asarray(mask[index]) for _, index, *_ in cuts]
    channels = planes[0].shape[0]
    windows = windows or [
        display_window(np.concatenate([p[c].ravel() for p in planes]), stretch=True)
        for c in range(channels)
    ]
    rows = []
    for (_, _, aspect, where), plane, plane_mask in zip(cuts, planes, masks):
        row = []
        for c in range(channels):
            low, high, note = windows[c]
            name = channel_names[c] if c < len(channel_names) else f"channel {c}"
            row.append(
                Panel(
                    image=_scaled(plane[c], low, high),
                    title=f"{name}: {where}\n{note}",
                    mask=plane_mask,
                    aspect=float(aspect),
                    origin="lower" if anatomical else "upper",
                )
            )
        rows.append(tuple(row))
    return Tile(caption=text, rows=tuple(rows))


def frame_indices(frames: int, wanted: int) -> list[int]:
    """Up to `wanted` frame indices spread evenly from the first frame to the last."""
    if frames <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, frames - 1, min(wanted, frames))})


def frames_tile(
    frames,
    indices: list[int],
    titles: list[str],
    text: str,
    window: tuple[float, float, str] | None = None,
) -> Tile:
    """A strip of frames (t, y, x[, c]) at `indices`, in one window (default: that of
    these frames)."""
    chosen = [_colour(np.asarray(frames[i])) for i in indices]
    low, high, note = window or display_window(np.stack(chosen))
    panels = tuple(
        Panel(image=_scaled(f, low, high), title=f"{t}\n{note}" if k == 0 else t)
        for k, (f, t) in enumerate(zip(chosen, titles))
    )
    return Tile(caption=text, rows=(panels,))
