"""fomo-mri's LitData peer, configured as LitData's documentation advises for speed:
`optimize` runs the deterministic part of the MONAI peers' chain (load, RAS, modalities
stacked, z-scored, cast; foreground indices when patches are centred on them) once per
volume in 2 worker processes and writes each volume's tensors, with LitData's own tensor
serializer, to uncompressed chunks of 64 MB (its default); a `StreamingDataset`
applies the same random MONAI transforms in `__getitem__` (its `transform`
argument), and a `StreamingDataLoader` with 2 workers, persistent and prefetching as the
MONAI loaders do, batches the patches cut from one volume."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
from pathlib import Path

import torch

__all__ = ["LitDataPrepareError", "litdata_dataset", "litdata_loader", "litdata_prepare"]

CHUNK_BYTES = "64MB"  # LitData's default, and what its docs use for large samples


def _import_litdata():
    # litdata asks PyPI for a newer version whenever a dataset is made (a 30 s timeout
    # offline); the switch is read when litdata is first imported
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    import litdata

    return litdata


def _volume(item: dict, *, chain) -> dict:
    """One volume's cached tensors: `chain` (MONAI's deterministic part) on its files."""
    data = chain(item)
    return {key: torch.as_tensor(value).contiguous() for key, value in data.items()}


class LitDataPrepareError(RuntimeError):
    """LitData's `optimize` wrote fewer volumes than it was given (its workers log their
    errors and exit without raising)."""


def litdata_prepare(items: list[dict], chains, output_dir: Path, workers: int = 2) -> None:
    """Write `items` (dicts of file paths) to LitData chunks under `output_dir`, each
    volume through the deterministic chain of `chains` (`monai_transforms`)."""
    litdata = _import_litdata()
    deterministic, _ = chains
    # optimize forces the process-wide start method to its default, spawn: the DataLoaders
    # measured after it keep the one they would have had
    start_method = multiprocessing.get_start_method(allow_none=True)
    try:
        litdata.optimize(
            fn=functools.partial(_volume, chain=deterministic),
            inputs=items,
            output_dir=str(output_dir),
            chunk_bytes=CHUNK_BYTES,
            num_workers=workers,
            mode="overwrite",
            verbose=False,
        )
    finally:
        multiprocessing.set_start_method(start_method, force=True)
    index = json.loads((Path(output_dir) / "index.json").read_text())
    written = sum(chunk["chunk_size"] for chunk in index["chunks"])
    if written != len(items):
        raise LitDataPrepareError(
            f"{output_dir}: LitData's optimize wrote {written} of {len(items)} volumes"
        )


def litdata_dataset(output_dir: Path, chains, shuffle: bool = True):
    """A `StreamingDataset` over the chunks in `output_dir` that gives, per volume, the
    patches the random chain of `chains` cuts from it (a list of dicts)."""
    litdata = _import_litdata()
    # `transform` is applied in `__getitem__`, the docs' custom-transform subclass built in
    return litdata.StreamingDataset(str(output_dir), shuffle=shuffle, transform=chains[1])


def _seed_worker(_: int) -> None:
    # each worker's MONAI transforms draw from their own stream, as MONAI's DataLoader does
    info = torch.utils.data.get_worker_info()
    info.dataset.transform[0].set_random_state(seed=info.seed % 2**32)


def litdata_loader(dataset, workers: int, prefetch: int = 4):
    """LitData's `StreamingDataLoader`: one volume's patches per batch (MONAI's
    `list_data_collate`), persistent workers and prefetch as the MONAI peers have them."""
    from monai.data import list_data_collate

    litdata = _import_litdata()
    return litdata.StreamingDataLoader(
        dataset,
        batch_size=1,
        num_workers=workers,
        collate_fn=list_data_collate,
        worker_init_fn=_seed_worker if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers else None,
    )
