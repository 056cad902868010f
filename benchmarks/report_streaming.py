"""The streaming report: the engine reading a workload's dataset from local disk beside
reading it from an S3 API server on loopback, cold, warm and under a tight cache limit,
with the cache folder's peak disk use beside its limit."""

from __future__ import annotations

__all__ = ["streaming_lines"]


def streaming_lines(results: dict) -> list[str]:
    """The streaming table: each remote row as a share of the local one, disk vs limit."""
    rows = [w for w in results["workloads"] if "streaming" in w]
    if not rows:
        return []
    lines = [
        "",
        "Streaming from an S3 API server on loopback (moto), the engine with augmentation:",
        "",
        "| workload | reading | samples/s | of local | first batch s | cache peak MB "
        "| cache limit MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "local": "local disk",
        "cold": "remote, cold cache",
        "warm": "remote, warm cache",
        "tight": "remote, cold, tight limit",
    }
    for w in rows:
        s = w["streaming"]
        base = s["local"]["samples_per_s"]
        for key, label in names.items():
            r = s[key]
            share = f"{100 * r['samples_per_s'] / base:.0f}%"
            peak = f"{r['cache_peak_mb']:.0f}" if "cache_peak_mb" in r else "-"
            limit = f"{r['cache_limit_mb']:.0f}" if "cache_limit_mb" in r else "-"
            lines.append(
                f"| {w['name']} | {label} | {r['samples_per_s']:.1f} | {share} "
                f"| {r['first_batch_s']:.2f} | {peak} | {limit} |"
            )
    lines.append("")
    for w in rows:
        s = w["streaming"]
        over = [
            k for k in ("cold", "warm", "tight") if s[k]["cache_peak_mb"] > s[k]["cache_limit_mb"]
        ]
        if "server_mb_per_s" in s:
            local = s["epoch_samples"] / s["local"]["samples_per_s"]
            cold = 100 * s["cold"]["samples_per_s"] / s["local"]["samples_per_s"]
            fetch_rate = s.get("fetch_mb_per_s", s["server_mb_per_s"])
            transfer = s["epoch_fetch_mb"] / s["server_mb_per_s"]
            fetch = s["epoch_fetch_mb"] / fetch_rate
            lines.append(
                f"- {w['name']}: the server delivers {s['server_mb_per_s']:.0f} MB/s to "
                f"{s['fetch_threads']} readers, {fetch_rate:.0f} MB/s checked and written "
                f"into a cache as the cache fetches; a cold epoch fetches "
                f"{s['epoch_fetch_mb']:.0f} MB: {transfer:.2f} s of transfer alone, "
                f"{fetch:.2f} s of fetching, against a local epoch of {local:.2f} s. So a "
                f"cold epoch reaches at most {100 * local / max(local, transfer):.0f}% of "
                f"local by transfer, {100 * local / max(local, fetch):.0f}% by fetching "
                f"(wholly overlapped with reading); the engine's reached {cold:.0f}%."
            )
        if "layout" in s:
            layout = s["layout"]
            shards = (
                f"in shards of {layout['shard_bytes']} bytes, " if "shard_bytes" in layout else ""
            )
            lines.append(
                f"- {w['name']}: the streamed dataset is stored {shards}read "
                f"{layout['shuffle_shards']} shards (a volume counts as one) at a time "
                "(shuffle_shards), on disk and from the URL alike."
            )
        lines.append(
            f"- {w['name']}: dataset {s['dataset_mb']:.0f} MB; the least limit it accepts "
            f"{s['least_limit_mb']:.0f} MB; "
            + (
                "disk use stayed within every limit."
                if not over
                else f"disk use passed the limit in: {', '.join(over)}."
            )
        )
    return lines
