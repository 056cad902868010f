"""Shards -> batches: DALI pipelines, a torch fallback, 3D patch and clip samplers."""
