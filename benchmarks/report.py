"""Benchmark results as JSON, Markdown tables and a PNG chart. Every ratio in the tables is
computed here from the measured figures of the same run."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.report2d import copies_lines
from benchmarks.report_streaming import streaming_lines

__all__ = ["markdown_table", "write_results"]


def _pair(a: dict, b: dict, key: str, digits: int = 0) -> str:
    return f"{a.get(key, float('nan')):.{digits}f} / {b.get(key, float('nan')):.{digits}f}"


def _throughput(results: dict) -> list[str]:
    lines = [
        "| workload | sample | mode | baseline samples/s | engine samples/s | speed-up "
        "| CPU ms/sample (base / engine) | first batch s (base / engine) "
        "| peak RSS MB (base / engine) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for w in results["workloads"]:
        for mode in ("augmented", "plain"):
            b, e = w[mode]["baseline"], w[mode]["engine"]
            lines.append(
                f"| {w['name']} | {w['what']} | {mode} | {b['samples_per_s']:.1f} "
                f"| {e['samples_per_s']:.1f} | **{w[mode]['speedup']:.1f}x** "
                f"| {_pair(b, e, 'cpu_ms_per_sample', 1)} | {_pair(b, e, 'first_batch_s', 2)} "
                f"| {_pair(b, e, 'peak_rss_mb')} |"
            )
    return lines


def _cached(w: dict) -> list[str]:
    """The engine beside the cached peers (MONAI's cached datasets, LitData): preparation,
    speed, memory; the ratios are to the fastest of them in each mode."""
    cached, ingest = w["cached"], w["ingest"]
    lines = [
        "",
        f"{w['name']}: the engine beside the cached peers (all with "
        f"{cached['cache']['workers']} workers or threads)",
        "",
        "| system | prepare s | disk MB | prepare peak MB | augmented samples/s "
        "| plain samples/s | CPU ms/sample (augmented) | peak RSS MB (augmented) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| medshard (ingest + loader) | {ingest['seconds']:.1f} | {ingest['disk_mb']:.0f} "
        f"| {ingest['peak_rss_mb']:.0f} | {w['augmented']['engine']['samples_per_s']:.1f} "
        f"| {w['plain']['engine']['samples_per_s']:.1f} "
        f"| {w['augmented']['engine']['cpu_ms_per_sample']:.1f} "
        f"| {w['augmented']['engine']['peak_rss_mb']:.0f} |",
    ]
    for peer in cached.values():
        prep = peer["prepare"]["augmented"]
        lines.append(
            f"| {peer['system']} | {prep['seconds']:.1f} | {prep['disk_mb']:.0f} "
            f"| {prep['peak_rss_mb']:.0f} | {peer['augmented']['samples_per_s']:.1f} "
            f"| {peer['plain']['samples_per_s']:.1f} "
            f"| {peer['augmented']['cpu_ms_per_sample']:.1f} "
            f"| {peer['augmented']['peak_rss_mb']:.0f} |"
        )
    lines.append("")
    for mode in ("augmented", "plain"):
        fastest = max(cached.values(), key=lambda p: p[mode]["samples_per_s"])
        ratio = w[mode]["engine"]["samples_per_s"] / fastest[mode]["samples_per_s"]
        lines.append(
            f"- {mode}: the engine gives {ratio:.1f}x the fastest cached peer "
            f"({fastest['system']})."
        )
    memory = w["augmented"]["engine"]["peak_rss_mb"] / cached["cache"]["augmented"]["peak_rss_mb"]
    lines.append(f"- The engine's peak RSS is {memory:.2f} of CacheDataset's.")
    return lines


def _notes(results: dict) -> list[str]:
    machine = results["machine"]
    copy = machine.get("copy_gb_per_s")
    notes = [
        "",
        "| workload | inputs | ingest s (2 workers) | ingest s (1 worker) | speed-up "
        "| MB/s | disk MB | ingest peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in results["workloads"]:
        ingest = w.get("ingest", {"seconds": w["ingest_seconds"]})
        single = w.get("ingest_one_worker")
        one = f"{single['seconds']:.1f}" if single else "-"
        gain = f"{single['seconds'] / ingest['seconds']:.2f}x" if single else "-"
        notes.append(
            f"| {w['name']} | {w['inputs']} | {ingest['seconds']:.1f} | {one} | {gain} "
            f"| {w['ingest_mb_per_s']:.1f} | {ingest.get('disk_mb', 0):.0f} "
            f"| {ingest.get('peak_rss_mb', 0):.0f} |"
        )
    notes.append("")
    for w in results["workloads"]:
        if "cached" in w:
            notes += _cached(w) + [""]
    cores = machine["cores"]
    for w in results["workloads"]:
        if "decode_ceiling" in w:
            rates, speed = w["decode_ceiling"], w["augmented"]["engine"]["samples_per_s"]
            notes.append(
                f"- {w['name']}: decode-bound ceiling {rates['ceiling']:.0f} images/s "
                f"({cores} cores x the one-core decode rate), {rates['threads']:.0f} images/s "
                f"from {results['workers']} threads that only decode; the engine reaches "
                f"{100 * speed / rates['ceiling']:.0f}% of the ceiling with augmentation, "
                f"{100 * speed / rates['threads']:.0f}% of the decoding threads."
            )
        per_sample = w["augmented"]["engine"].get("bytes_per_sample")
        if copy and per_sample and "decode_ceiling" not in w:
            bound = copy * 1e9 / per_sample
            share = [100 * w[m]["engine"]["samples_per_s"] / bound for m in ("augmented", "plain")]
            notes.append(
                f"- {w['name']}: {per_sample / 2**20:.2f} MiB per sample; the memory-copy "
                f"bound is {bound:.0f} samples/s ({copy:.1f} GB/s, one thread); the engine "
                f"reaches {share[0]:.0f}% of it with augmentation, {share[1]:.0f}% plain."
            )
        if "memory" in w:
            m = w["memory"]
            notes.append(
                f"- Memory ({w['name']}): engine peak RSS {m['engine_mb'][0]:.0f} MB at "
                f"{m['samples'][0]} inputs, {m['engine_mb'][1]:.0f} MB at {m['samples'][1]} "
                f"({m['engine_mb'][1] / m['engine_mb'][0]:.2f}x); baseline "
                f"{m['baseline_mb'][0]:.0f} -> {m['baseline_mb'][1]:.0f} MB."
            )
        if "parallelism" in w:
            p = w["parallelism"]
            notes.append(
                f"- {w['name']}: engine ({p['engine_loader']}) {p['engine']}; baseline "
                f"{p['baseline']}."
            )
    if "memory" in results:
        m = results["memory"]
        notes.append(
            f"- Memory ({m['workload']}): engine peak RSS {m['engine_mb'][0]:.0f} MB at "
            f"{m['samples'][0]} samples, {m['engine_mb'][1]:.0f} MB at {m['samples'][1]}; "
            f"baseline {m['baseline_mb'][0]:.0f} -> {m['baseline_mb'][1]:.0f} MB."
        )
    notes.append(
        f"- Machine: {cores} cores, {machine['memory_gb']:.0f} GiB, "
        f"{machine['gpu'] or 'no GPU'}, torch intra-op threads "
        f"{machine.get('torch_threads', '?')}; {results['workers']} workers on each side; "
        f"median of at least {results['repetitions']} runs after {results['warmup']} warm-up "
        f"run, and of as many more as make {results.get('min_seconds', 0):g} s of runs; "
        f"page cache: {results['page_cache']}. CPU ms/sample: the whole process tree's CPU "
        "time over every run, start-up included. `augmented`: the workload's training "
        "augmentation (the same code on both sides); `plain`: decode and batch only."
    )
    return notes


def markdown_table(results: dict) -> str:
    lines = _throughput(results) + _notes(results) + copies_lines(results)
    return "\n".join(lines + streaming_lines(results)) + "\n"


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
