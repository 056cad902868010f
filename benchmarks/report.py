"""Benchmark results as JSON, a Markdown table and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_results", "markdown_table"]


def markdown_table(results: dict) -> str:
    lines = [
        "| workload | sample | mode | baseline samples/s | engine samples/s | speed-up "
        "| engine MB/s | first batch s (base / engine) | peak RSS MB (base / engine) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for w in results["workloads"]:
        for mode in ("augmented", "plain"):
            b, e = w[mode]["baseline"], w[mode]["engine"]
            lines.append(
                f"| {w['name']} | {w['what']} | {mode} | {b['samples_per_s']:.1f} "
                f"| {e['samples_per_s']:.1f} | **{w[mode]['speedup']:.1f}x** | {e['mb_per_s']:.0f} "
                f"| {b['first_batch_s']:.2f} / {e['first_batch_s']:.2f} "
                f"| {b['peak_rss_mb']:.0f} / {e['peak_rss_mb']:.0f} |"
            )
    notes = ["", "| workload | inputs | ingest s | ingest MB/s |", "|---|---:|---:|---:|"]
    notes += [
        f"| {w['name']} | {w['inputs']} | {w['ingest_seconds']:.1f} | {w['ingest_mb_per_s']:.1f} |"
        for w in results["workloads"]
    ]
    notes.append("")
    cores = results["machine"]["cores"]
    for w in results["workloads"]:
        if "decode_ceiling" in w:
            share = 100 * w["augmented"]["engine"]["samples_per_s"] / w["decode_ceiling"]
            notes.append(
                f"- {w['name']}: decode-bound ceiling {w['decode_ceiling']:.0f} images/s "
                f"({cores} cores x the one-core decode rate); the engine reaches {share:.0f}% "
                "of it with augmentation."
            )
    if "memory" in results:
        m = results["memory"]
        notes.append(
            f"- Memory ({m['workload']}): engine peak RSS {m['engine_mb'][0]:.0f} MB at "
            f"{m['samples'][0]} samples, {m['engine_mb'][1]:.0f} MB at {m['samples'][1]}; "
            f"baseline {m['baseline_mb'][0]:.0f} -> {m['baseline_mb'][1]:.0f} MB."
        )
    machine = results["machine"]
    notes.append(
        f"- Machine: {cores} cores, {machine['memory_gb']:.0f} GiB, "
        f"{machine['gpu'] or 'no GPU'}; {results['workers']} DataLoader workers on both sides; "
        f"median of {results['repetitions']} runs after {results['warmup']} warm-up run; "
        f"page cache: {results['page_cache']}. `augmented`: the workload's training "
        "augmentation (the same code on both sides); `plain`: decode and batch only."
    )
    return "\n".join(lines) + "\n" + "\n".join(notes) + "\n"


def _chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [w["name"] for w in results["workloads"]]
    base = [w["augmented"]["baseline"]["samples_per_s"] for w in results["workloads"]]
    engine = [w["augmented"]["engine"]["samples_per_s"] for w in results["workloads"]]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=120)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], base, width=0.4, label="lazy baseline", color="#999999")
    ax.bar([i + 0.2 for i in x], engine, width=0.4, label="medshard", color="#1f77b4")
    for i, w in enumerate(results["workloads"]):
        ax.annotate(
            f"{w['augmented']['speedup']:.1f}x",
            (i + 0.2, engine[i]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("samples/s (log)")
    cores = results["machine"]["cores"]
    ax.set_title(f"Loader throughput with augmentation, {cores}-core CPU", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "latest.json", out / "latest.md", out / "latest.png"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    paths[1].write_text(markdown_table(results))
    _chart(results, paths[2])
    return paths
