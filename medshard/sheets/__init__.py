"""Contact sheets: a look at a dataset's samples as stored, or as the training loader
yields them, rendered with matplotlib (Agg, no display) to PNG."""

from medshard.sheets.sheet import MAX_SHOW, Sheet, render_sheet

__all__ = ["MAX_SHOW", "Sheet", "render_sheet"]
