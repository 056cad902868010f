"""The 2D workloads' report: the lazy PIL loader beside the engine on original bytes and
on each kind of training copy, each engine row as a share of its bound (the decode-bound
ceiling for encoded bytes, the memory-copy bound for raw copies), with the ingest time
and disk each needs, and where a sample's time goes on the original-bytes path."""

from __future__ import annotations

__all__ = ["copies_lines"]


def _row(w: dict, read: str, ingest: dict, engine: dict, plain: dict, bound: dict, what: str):
    """One engine row; `bound`: its ceiling and, for decoding, the rate of threads that
    only decode."""
    base = w["augmented"]["baseline"]["samples_per_s"]
    speed = engine["samples_per_s"]
    threads = f"{100 * speed / bound['threads']:.0f}%" if "threads" in bound else "-"
    return (
        f"| {w['name']} | {read} | {ingest['seconds']:.1f} | {ingest.get('disk_mb', 0):.0f} "
        f"| {speed:.0f} | **{speed / base:.1f}x** | {bound['ceiling']:.0f} ({what}) "
        f"| {100 * speed / bound['ceiling']:.0f}% | {threads} | {plain['samples_per_s']:.0f} "
        f"| {engine.get('cpu_ms_per_sample', float('nan')):.2f} |"
    )


def copies_lines(results: dict) -> list[str]:
    """Markdown for the workloads that were measured on training copies."""
    measured = [w for w in results["workloads"] if "copies" in w]
    if not measured:
        return []
    copy_rate = results["machine"]["copy_gb_per_s"]
    lines = [
        "",
        "2D training copies: the lazy PIL loader's samples/s beside the engine's on the "
        "original bytes and on each kind of copy (same augmentation, batch size and workers)",
        "",
        "| workload | engine reads | ingest s | disk MB | augmented samples/s | x lazy PIL "
        "| bound samples/s | share of bound | share of decoding threads | plain samples/s "
        "| CPU ms/sample |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in measured:
        lines.append(
            f"| {w['name']} | lazy PIL loader (files) | - | - "
            f"| {w['augmented']['baseline']['samples_per_s']:.0f} | 1.0x | - | - | - "
            f"| {w['plain']['baseline']['samples_per_s']:.0f} "
            f"| {w['augmented']['baseline']['cpu_ms_per_sample']:.2f} |"
        )
        lines.append(
            _row(
                w,
                "original bytes",
                w["ingest"],
                w["augmented"]["engine"],
                w["plain"]["engine"],
                w["decode_ceiling"],
                "decode",
            )
        )
        for kind, entry in w["copies"].items():
            engine = entry["augmented"]
            if "decode_ceiling" in entry:
                bound, what = entry["decode_ceiling"], "decode"
            else:
                bound = {"ceiling": copy_rate * 1e9 / engine["bytes_per_sample"]}
                what = "memory copy"
            lines.append(
                _row(w, f"{kind} copies", entry["ingest"], engine, entry["plain"], bound, what)
            )
    lines.append("")
    for w in measured:
        budget = w.get("budget") or {}
        if budget:
            work = sum(budget.values())
            lines.append(
                f"- {w['name']}, original bytes, one core per sample: reading and decoding "
                f"{budget['read_decode_ms']:.3f} ms, the geometric steps "
                f"{budget['geometry_ms']:.3f} ms, the copy into the batch as floats "
                f"{budget['to_float_ms']:.3f} ms: decoding is "
                f"{100 * budget['read_decode_ms'] / work:.0f}% of the work, the most of the "
                "decode-bound ceiling a loader reaches with these steps on the same cores."
            )
    lines.append(
        f"- Bounds: decode = cores x one core's rate of the engine's decoder on those bytes; "
        f"memory copy = this machine's copy rate ({copy_rate:.1f} GB/s, one thread) / "
        "the bytes of a delivered sample. Decoding threads: the rate of as many threads as "
        "the loaders use doing nothing but decode those bytes at once, measured beside the "
        "ceiling (what this machine's cores give together). Ingest s and disk MB: the "
        "dataset with originals only, and with originals and that copy."
    )
    return lines
