"""Where this process stands: its rank among the training processes, and its DataLoader
worker. Read when asked, never at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Topology", "current_topology", "worker_info"]


@dataclass(frozen=True)
class Topology:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def current_topology() -> Topology:
    """From torch.distributed when it is initialised, else from the RANK, WORLD_SIZE and
    LOCAL_RANK variables that `accelerate launch` and `torchrun` set."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Topology(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    return Topology(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) inside a DataLoader worker, else (0, 1)."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)
