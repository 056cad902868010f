"""Short rich tables for the terminal: an ingest summary and a dataset's card."""

from __future__ import annotations

from rich.console import Group
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

from medshard.ingest.result import IngestResult
from medshard.shards.reader import Dataset
from medshard.shards.storage import is_url, normal_url

__all__ = ["ingest_table", "inspect_table"]


def _counts_table(title: str, counts: dict, label_names: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("split")
    table.add_column("samples", justify="right")
    for name in label_names:
        table.add_column(name, justify="right")
    for split, c in counts.items():
        table.add_row(split, str(c.samples), *[str(c.per_label.get(n, 0)) for n in label_names])
    return table


def ingest_table(result: IngestResult, done: str = "ingested") -> Group:
    """Samples per split and label, then shards, bytes, seconds and MB/s."""
    card = result.card
    where = normal_url(result.out) if is_url(result.out) else result.out
    table = _counts_table(f"{done} {where}", result.counts, card.label_names)
    shards = len(card.shards)
    written = result.dataset_bytes
    summary = (
        f"{shards} shard{'s' if shards != 1 else ''}, {decimal(written)} on disk "
        f"({written / max(result.source_bytes, 1):.2f}x the {decimal(result.source_bytes)} "
        f"of sources), {result.seconds:.1f} s, {result.mb_per_s:.1f} MB/s"
        + (f", {result.frames / result.seconds:.0f} frames/s" if result.frames else "")
        + (f", {card.rejected} refused (see rejected.parquet)" if card.rejected else "")
    )
    return Group(table, Text(summary))


def inspect_table(dataset: Dataset) -> list[Table]:
    """The card as tables: counts per split and label, then shards, bytes, fields, shapes."""
    card = dataset.card
    counts = _counts_table(
        f"{dataset.location} ({card.kind}, {card.task or 'no labels'})",
        card.counts,
        card.label_names,
    )
    about = Table(show_header=False, box=None)
    about.add_column(style="bold")
    about.add_column()
    rows = dataset.manifest.to_pylist()
    samples = [r for r in rows if card.kind == "images" or r["zarr_path"] is not None]
    shapes = sorted({tuple(r["shape"]) for r in samples})
    dtypes = sorted({r["dtype"] for r in samples})
    about.add_row("format", f"medshard v{card.format_version} ({card.created_by})")
    about.add_row("shards", f"{len(card.shards)} ({decimal(sum(s.bytes for s in card.shards))})")
    about.add_row("fields", ", ".join(card.fields))
    shown = ", ".join("x".join(map(str, s)) for s in shapes[:4]) + (
        " ..." if len(shapes) > 4 else ""
    )
    axes = {"images": "(c,y,x)", "volumes": "(c,z,y,x)", "video": "(t,y,x[,c])"}[card.kind]
    about.add_row(f"shapes {axes}", shown)
    about.add_row("dtypes", ", ".join(dtypes))
    spacings = sorted({tuple(r["spacing"]) for r in samples if r["spacing"]})
    if spacings:
        shown = ", ".join("x".join(f"{v:g}" for v in s) for s in spacings[:3])
        about.add_row("spacing (z,y,x)", shown + (" ..." if len(spacings) > 3 else ""))
    if card.channel_names:
        about.add_row("channels", ", ".join(card.channel_names))
    fps = sorted({r["fps"] for r in samples if r["fps"]})
    if card.kind == "video":
        about.add_row(
            "fps",
            ", ".join(f"{f:g}" for f in fps)
            + (" (frame folders: index)" if any(r["fps"] is None for r in samples) else ""),
        )
        clips = sum(1 for r in rows if r["shard"] is not None)
        if clips:
            about.add_row("clips", f"{clips} in WebDataset shards")
    if card.crop_size:
        crops = sum(1 for r in rows if r["shard"] is not None)
        about.add_row(
            "crops", f"{crops} of {'x'.join(map(str, card.crop_size))} in WebDataset shards"
        )
    if card.folds:
        about.add_row("folds", str(card.folds))
    if card.stats:
        mean = ", ".join(f"{m:.1f}" for m in card.stats.mean)
        std = ", ".join(f"{s:.1f}" for s in card.stats.std)
        about.add_row("intensity", f"mean {mean}; std {std} (train, per channel)")
        if card.stats.p0_5:
            low = ", ".join(f"{v:.1f}" for v in card.stats.p0_5)
            high = ", ".join(f"{v:.1f}" for v in card.stats.p99_5)
            about.add_row("percentiles", f"0.5%: {low}; 99.5%: {high}")
    if card.rejected:
        about.add_row("refused", f"{card.rejected} inputs (rejected.parquet)")
    return [counts, about]
