"""Benchmarks: the engine against the lazy-loading baselines."""
