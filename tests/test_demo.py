"""`medshard demo` at a small scale: every workload is ingested and verified, both models
train to finite metrics, the sheets are drawn, and each speed-up is the ratio of the two
measured rates."""

import math
import re

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
    for name in ("mammo-tiles", "fomo-mri", "ivf-timelapse"):
        base, engine = rows[name]["samples_per_s"]
        assert base > 0 and engine > 0
        shown = re.search(r"\(([0-9.]+)x\)", rows[name]["bench"]).group(1)
        assert float(shown) == round(engine / base, 1)
    for sheet in ("mammo-tiles.png", "fomo-mri.png"):
        assert (tmp_path / "demo" / "sheets" / sheet).stat().st_size > 10_000
    assert "medshard demo" in console.export_text()
