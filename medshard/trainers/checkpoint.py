"""Training state on disk without pickles: model weights as safetensors; optimizer,
scheduler, gradient scaler and RNG states as JSON plus a safetensors file for their
tensors; position and history in `checkpoint.json`; each rank's RNG and loader state
(`rng-R.json`, `loader-R.json`). A checkpoint is written into a hidden folder, flushed
to disk and renamed into place, so a half-written one is never loaded, not even after
the machine itself went down."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medshard.errors import MedshardError

__all__ = [
    "CheckpointError",
    "TrainingState",
    "copy_checkpoint",
    "has_checkpoint",
    "is_pickle",
    "load_checkpoint",
    "save_checkpoint",
]

STATE_FILE = "checkpoint.json"  # written last: its presence marks a complete checkpoint
FORMAT_VERSION = 1
# Suffixes under which PyTorch, Accelerate and Lightning keep pickles.
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt"}


class CheckpointError(MedshardError, ValueError):
    """A training checkpoint that cannot be resumed from."""


@dataclass(frozen=True)
class TrainingState:
    """Where a run stands: `epoch` epochs complete plus `step` batches (on each rank) of
    the next one. Mid-epoch, `loader` is this rank's train loader state (its global
    position), `tally` the epoch's sums so far over all ranks, and `batch` the batch
    geometry (geometry.BatchGeometry) that the position was reached with. `validations`
    are the mid-epoch validations so far."""

    epoch: int
    step: int = 0
    loader: dict | None = None
    history: list[dict] = field(default_factory=list)
    tally: dict | None = None
    batch: dict | None = None
    validations: list[dict] = field(default_factory=list)


def is_pickle(path: Path) -> bool:
    """Whether loading the file would unpickle: a pickle suffix, a pickle's opening
    bytes, or a zip holding a pickle (what torch.save writes)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith(".pkl") for name in archive.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def save_checkpoint(
    folder: Path, state: TrainingState, *, accelerator, model, optimizer, scheduler
) -> None:
    """Write the whole training state to `folder`, replacing it atomically; every rank
    calls this (each writes its own RNG state), the main process writes the rest."""
    folder = Path(folder)
    partial, main = _partial(folder), accelerator.is_main_process
    if main:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    partial.mkdir(parents=True, exist_ok=True)
    rank = accelerator.process_index
    _write_tree(partial, f"rng-{rank}", _rng_state())
    _write_json(partial / f"loader-{rank}.json", state.loader)  # a backend's own, per rank
    if main:
        from safetensors.torch import save_model

        save_model(accelerator.unwrap_model(model), str(partial / "model.safetensors"))
        _fsync(partial / "model.safetensors")
        _write_tree(partial, "optimizer", optimizer.state_dict())
        _write_tree(partial, "scheduler", scheduler.state_dict())
        if accelerator.scaler is not None:
            _write_tree(partial, "scaler", accelerator.scaler.state_dict())
    accelerator.wait_for_everyone()
    if main:
        card = {
            "format_version": FORMAT_VERSION,
            "epoch": state.epoch,
            "step": state.step,
            "accumulation_step": accelerator.step,
            "world_size": accelerator.num_processes,
            "loader": state.loader,
            "history": state.history,
            "tally": state.tally,
            "batch": state.batch,
            "validations": state.validations,
        }
        _write_json(partial / STATE_FILE, _encode(card, {}))
        _replace(partial, folder)
    accelerator.wait_for_everyone()


def load_checkpoint(folder: Path, *, accelerator, model, optimizer, scheduler) -> TrainingState:
    """Restore what `save_checkpoint` wrote into the prepared model and optimizer, the
    scheduler, scaler and this rank's RNG; refuse a checkpoint that holds a pickle."""
    found = _find(Path(folder))
    card = _read_tree(found, STATE_FILE.removesuffix(".json"))
    if card.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{found / STATE_FILE}: checkpoint format version {card.get('format_version')!r} "
            f"is not one this medshard reads (it reads version {FORMAT_VERSION})"
        )
    _load_model(accelerator.unwrap_model(model), found / "model.safetensors")
    _load_into(optimizer, found, "optimizer")
    _load_into(scheduler, found, "scheduler")
    if accelerator.scaler is not None and (found / "scaler.json").is_file():
        _load_into(accelerator.scaler, found, "scaler")
    rank = accelerator.process_index
    rng = found / f"rng-{rank}.json"
    if rng.is_file():  # absent when resuming on more ranks than the run had
        _set_rng_state(_read_tree(found, rng.stem), rng)
    own = found / f"loader-{rank}.json"  # the main process's stands in for a new rank's
    loader = _read_tree(found, own.stem) if own.is_file() else card["loader"]
    accelerator.step = card.get("accumulation_step", 0)
    return TrainingState(
        epoch=card["epoch"],
        step=card["step"],
        loader=loader,
        history=card["history"],
        tally=card.get("tally"),
        batch=card.get("batch"),
        validations=card.get("validations", []),
    )


def copy_checkpoint(source: Path, dest: Path) -> None:
    """Copy a complete checkpoint folder to `dest`, replacing it atomically."""
    partial = _partial(Path(dest))
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    _replace(partial, Path(dest))


def _partial(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.partial")


def _old(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.old")


def _replace(partial: Path, folder: Path) -> None:
    """Rename `partial` to `folder`; between the two renames the previous checkpoint
    waits complete under `_old(folder)`, where `_find` looks after a crash."""
    old = _old(folder)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    _fsync(partial)
    os.replace(partial, folder)
    _fsync(folder.parent)  # the rename itself
    shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk: a preempted virtual machine can
    take its page cache with it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def has_checkpoint(folder: Path) -> bool:
    """Whether `folder` (or what a crash mid-save left beside it) holds a complete one."""
    folder = Path(folder)
    return any((c / STATE_FILE).is_file() for c in (folder, _partial(folder), _old(folder)))


def _find(folder: Path) -> Path:
    """The newest complete checkpoint among `folder` and what a crash mid-save left."""
    for candidate in (folder, _partial(folder), _old(folder)):
        if (candidate / STATE_FILE).is_file():
            _refuse_pickles(candidate)
            return candidate
    if folder.is_dir():
        _refuse_pickles(folder)
        raise CheckpointError(
            f"{folder}: not a medshard checkpoint (no {STATE_FILE}); start the run again "
            "without --resume, or in another output_dir"
        )
    raise CheckpointError(f"{folder}: nothing to resume (no checkpoint was saved there)")


def _refuse_pickles(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and is_pickle(path):
            raise CheckpointError(
                f"{path}: the checkpoint holds a pickle, which medshard never loads because "
                "unpickling can run any code; resume only from a checkpoint written by this "
                "version of medshard (safetensors and JSON), or start the run again without "
                "--resume"
            )


def _rng_state() -> dict:
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {
        "key": numpy_state["state"]["key"].tolist(),
        "pos": int(numpy_state["state"]["pos"]),
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, path: Path) -> None:
    try:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a random number generator state ({exc})") from exc


def _load_model(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_model

    if not path.is_file():
        raise CheckpointError(f"{path}: the checkpoint has no model weights")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except RuntimeError as exc:  # shapes differ: another model than this config's
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"{path}: the weights do not fit this config's model ({first}); resume with the "
            "config the run was started with"
        ) from exc
    if missing or unexpected:
        names = ", ".join(sorted([*missing, *unexpected])[:3])
        raise CheckpointError(
            f"{path}: the weights do not fit this config's model ({len(missing)} tensors "
            f"missing, {len(unexpected)} unexpected: {names}); resume with the config the "
            "run was started with"
        )


def _load_into(target, folder: Path, stem: str) -> None:
    """`target.load_state_dict` from `stem.json` (+ `stem.safetensors`)."""
    try:
        target.load_state_dict(_read_tree(folder, stem))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"{folder / f'{stem}.json'}: the saved state does not fit this run ({exc}); "
            "resume with the config the run was started with"
        ) from exc


# A state dict as JSON: tensors go to a safetensors file and appear as {"$tensor": name};
# tuples, dicts with non-string keys (optimizer state is keyed by parameter index) and
# non-finite floats are tagged so that they come back as they were. Written by hand:
# safetensors holds only flat tensors, and JSON has no tuples, int keys or infinities.


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous()
        return {"$tensor": name}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return _encode(value.item(), tensors)
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"$items": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    raise TypeError(f"cannot write a {type(value).__name__} into a checkpoint")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "$tensor" in value:
        return tensors[value["$tensor"]]
    if "$float" in value:
        return float(value["$float"])
    if "$tuple" in value:
        return tuple(_decode(v, tensors) for v in value["$tuple"])
    if "$items" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["$items"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w") as handle:
        handle.write(json.dumps(value, allow_nan=False, indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _write_tree(folder: Path, stem: str, value: Any) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(value, tensors)
    if tensors:
        save_file(tensors, str(folder / f"{stem}.safetensors"))
        _fsync(folder / f"{stem}.safetensors")
    _write_json(folder / f"{stem}.json", encoded)


def _read_tree(folder: Path, stem: str) -> Any:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path, tensor_path = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    try:
        encoded = json.loads(path.read_text())
        tensors = load_file(str(tensor_path)) if tensor_path.is_file() else {}
        return _decode(encoded, tensors)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing from the checkpoint") from exc
    except (ValueError, KeyError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint file ({exc})") from exc
