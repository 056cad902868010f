"""The benchmark report: every ratio it prints comes from the figures beside it."""

from benchmarks.report import markdown_table


def figures(rate: float, rss: float = 100.0) -> dict:
    return {
        "samples_per_s": rate,
        "cpu_ms_per_sample": 2.0,
        "first_batch_s": 0.1,
        "peak_rss_mb": rss,
        "bytes_per_sample": 2**20,
    }


def results() -> dict:
    ingest = {"seconds": 10.0, "disk_mb": 50.0, "peak_rss_mb": 300.0, "mb_per_s": 5.0}
    peer = {
        "system": "MONAI CacheDataset",
        "workers": 2,
        "prepare": {"augmented": {"seconds": 20.0, "disk_mb": 0.0, "peak_rss_mb": 900.0}},
        "augmented": figures(100.0, rss=2000.0),
        "plain": figures(300.0),
    }
    slower = peer | {"system": "MONAI PersistentDataset", "augmented": figures(50.0)}
    workload = {
        "name": "fomo-mri",
        "what": "patch",
        "inputs": 40,
        "ingest_seconds": 10.0,
        "ingest_mb_per_s": 5.0,
        "ingest": ingest,
        "ingest_one_worker": ingest | {"seconds": 18.0},
        "augmented": {"baseline": figures(10.0), "engine": figures(400.0), "speedup": 40.0},
        "plain": {"baseline": figures(20.0), "engine": figures(900.0), "speedup": 45.0},
        "cached": {"cache": peer, "persistent": slower},
        "memory": {"samples": [10, 40], "engine_mb": [500.0, 520.0], "baseline_mb": [1, 2]},
    }
    machine = {"cores": 2, "memory_gb": 16, "gpu": None, "copy_gb_per_s": 2**20 * 1000 / 1e9}
    return {
        "machine": machine,
        "workers": 2,
        "repetitions": 3,
        "warmup": 1,
        "page_cache": "warm",
        "workloads": [workload],
    }


def test_ratios_come_from_the_figures_of_the_run():
    text = markdown_table(results())
    assert "augmented: the engine gives 4.0x the fastest cached peer (MONAI CacheDataset)" in text
    assert "plain: the engine gives 3.0x the fastest cached peer" in text
    assert "peak RSS is 0.05 of CacheDataset's" in text
    assert "| fomo-mri | 40 | 10.0 | 18.0 | 1.80x |" in text  # 1 worker / 2 workers
    assert "bound is 1000 samples/s" in text
    assert "reaches 40% of it with augmentation, 90% plain" in text
    assert "520 MB at 40 (1.04x)" in text
