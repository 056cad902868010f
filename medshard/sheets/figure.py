"""Draw tiles on one contact sheet with matplotlib's Agg canvas (no display, no pyplot
state) and save it as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medshard.sheets.tiles import Panel, Tile

__all__ = ["DPI", "SHEET_MARK", "is_sheet", "render_tiles", "sheet_layout"]

DPI = 100
PANEL = 1.9  # inches per panel, each way
TITLE = 0.36  # inches above each panel for its title
CAPTION = 0.5  # inches under each tile for its key and label(s)
HEADER = 0.45  # inches at the top for the sheet's title
MIN_WIDTH = 5.0  # inches: room for the title above a single narrow tile
MAX_PANELS_ACROSS = 16
MASK_ALPHA = 0.45


SHEET_MARK = "medshard sheet"  # in every sheet's PNG text, so a sheet is told from a picture


def is_sheet(path: Path) -> bool:
    """Whether the PNG at `path` is a sheet medshard drew (and may be drawn again)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.info.get("Software") == SHEET_MARK
    except OSError:
        return False


def sheet_layout(tiles: int, rows: int, cols: int) -> tuple[int, float, float]:
    """(tiles per row, width, height in inches): rows as full as the count allows, the
    sheet near 7:5 across, at most MAX_PANELS_ACROSS panels side by side."""
    tile_w, tile_h = cols * PANEL, rows * (PANEL + TITLE) + CAPTION
    widest = max(1, MAX_PANELS_ACROSS // max(cols, 1))
    best = None
    for lines in range(1, tiles + 1):
        across = min(math.ceil(tiles / lines), widest)
        width = across * tile_w
        height = math.ceil(tiles / across) * tile_h + HEADER
        score = abs(math.log(width / height / 1.4))
        if best is None or score < best[0]:
            best = (score, across, width, height)
    _, across, width, height = best
    return across, max(width, MIN_WIDTH), height


def _overlay(mask: np.ndarray) -> np.ndarray:
    """RGBA: each label value in its own tab10 colour (the colours the Zarr store gives
    viewers), background transparent."""
    from matplotlib import colormaps

    palette = np.asarray(colormaps["tab10"].colors, np.float32)
    rgba = np.zeros((*mask.shape, 4), np.float32)
    on = mask > 0
    rgba[on, :3] = palette[(mask[on].astype(np.int64) - 1) % len(palette)]
    rgba[on, 3] = MASK_ALPHA
    return rgba


def _draw(ax, panel: Panel) -> None:
    shown = dict(aspect=panel.aspect, origin=panel.origin, interpolation="nearest")
    if panel.image.ndim == 2:
        ax.imshow(panel.image, cmap="gray", vmin=0.0, vmax=1.0, **shown)
    else:
        ax.imshow(panel.image, **shown)
    if panel.mask is not None and panel.mask.any():
        ax.imshow(_overlay(panel.mask), **shown)
    ax.set_title(panel.title, fontsize=6, pad=2)
    ax.set_axis_off()


def render_tiles(tiles: list[Tile], out: Path, title: str) -> tuple[int, int]:
    """Save the sheet to `out` (PNG); returns its (width, height) in pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows = max(len(t.rows) for t in tiles)
    cols = max(len(r) for t in tiles for r in t.rows)
    across, width, height = sheet_layout(len(tiles), rows, cols)
    figure = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    figure.text(0.5, 1 - 0.5 * HEADER / height, title, ha="center", va="center", fontsize=9)
    tile_w, tile_h = cols * PANEL, rows * (PANEL + TITLE) + CAPTION
    margin = (width - across * tile_w) / 2  # centres tiles narrower than the title
    for n, tile in enumerate(tiles):
        left = margin + (n % across) * tile_w
        top = HEADER + (n // across) * tile_h  # inches from the top of the sheet
        frame = (left / width, 1 - (top + tile_h) / height, tile_w / width, tile_h / height)
        figure.add_artist(
            Rectangle(
                frame[:2], *frame[2:], transform=figure.transFigure, fill=False, edgecolor="0.85"
            )
        )
        for r, row in enumerate(tile.rows):
            for c, panel in enumerate(row):
                box_left = left + c * PANEL + 0.06
                box_top = top + r * (PANEL + TITLE) + TITLE
                ax = figure.add_axes(
                    (
                        box_left / width,
                        1 - (box_top + PANEL - 0.06) / height,
                        (PANEL - 0.12) / width,
                        (PANEL - 0.06) / height,
                    )
                )
                _draw(ax, panel)
        below = top + len(tile.rows) * (PANEL + TITLE) + 0.05
        figure.text(
            (left + tile_w / 2) / width,
            1 - below / height,
            tile.caption,
            ha="center",
            va="top",
            fontsize=7,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=DPI, facecolor="white", metadata={"Software": SHEET_MARK})
    return canvas.get_width_height()
