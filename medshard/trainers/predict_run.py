"""The trained run that `medshard predict` serves: its folder and checkpoint, its saved
config and training dataset (whose card gives label names and normalisation statistics),
its network with the checkpoint's weights, and its validation preprocessing as a function
of one sample."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medshard.errors import MedshardError
from medshard.loaders import Augment2D, batch_channels
from medshard.loaders.augment import augment_2d, augment_3d
from medshard.loaders.frame_format import bit_depth_scale, stats_for, unit_stats
from medshard.shards.reader import Dataset, open_dataset
from medshard.shards.storage import is_url
from medshard.trainers.config import TrainConfig, load_config
from medshard.trainers.finetune import read_state_dict
from medshard.trainers.models import build_model
from medshard.trainers.predict_inputs import as_training_copy, training_copy
from medshard.trainers.setup import build_augment
from medshard.trainers.tasks import Task, build_task

__all__ = [
    "PREDICTED",
    "PredictError",
    "Run",
    "load_model",
    "open_run",
    "preprocessing",
    "run_copy",
    "window",
]

PREDICTED = ("classification", "multilabel", "regression", "segmentation")
WEIGHTS = "model.safetensors"


class PredictError(MedshardError, ValueError):
    """A run or a request that `medshard predict` cannot serve."""


@dataclass
class Run:
    """A trained run: its folder, the checkpoint read, its config, its training dataset
    (for the card) and its task."""

    path: Path
    checkpoint: Path
    config: TrainConfig
    dataset: Dataset
    task: Task

    @property
    def classes(self) -> list[str]:
        if self.task.name == "segmentation":
            return [str(k) for k in range(self.task.mask_classes)]
        return list(self.task.classes)


def open_run(path: Path) -> Run:
    """The run of a run folder (its best checkpoint, else its last) or of a checkpoint
    folder inside one."""
    path = Path(path)
    if (path / WEIGHTS).is_file() and (path.parent / "config.yaml").is_file():
        folder, checkpoint = path.parent, path
    elif (path / "config.yaml").is_file():
        folder = path
        found = [path / n for n in ("best", "last") if (path / n / WEIGHTS).is_file()]
        if not found:
            raise PredictError(f"{path}: the run has no weights yet (no best/ or last/ {WEIGHTS})")
        checkpoint = found[0]
    else:
        raise PredictError(
            f"{path}: not a run folder (config.yaml beside best/ or last/) nor a checkpoint "
            "folder inside one"
        )
    config = load_config(folder / "config.yaml")
    if config.task not in PREDICTED:
        raise PredictError(
            f"{folder}: a {config.task} run; predict serves {', '.join(PREDICTED)} runs"
        )
    try:
        ds = open_dataset(config.dataset, **config.storage())
    except MedshardError as exc:
        relative = not is_url(config.dataset) and not Path(config.dataset).is_absolute()
        hint = (
            " (the run's config names it relative to the folder the run was started from: "
            "run predict from there)"
            if relative
            else ""
        )
        raise PredictError(
            f"{config.dataset}: the run's training dataset cannot be opened ({exc}){hint}; "
            "predict takes the label names and normalisation statistics from its card"
        ) from exc
    return Run(folder, checkpoint, config, ds, build_task(config, ds))


def run_copy(run: Run):
    """How the run's training copies were made (a TrainCopy), when it read them."""
    return training_copy(run.dataset, run.config.loader.original)


def load_model(run: Run, device: torch.device) -> torch.nn.Module:
    """The run's network with the checkpoint's weights, every tensor matched."""
    ds, config = run.dataset, run.config
    in_channels = batch_channels(ds, build_augment(config, ds))
    dims = 3 if ds.card.kind == "volumes" else 2
    model = build_model(config, dims, in_channels, run.task.out_channels)
    state = read_state_dict(run.checkpoint)
    misfit = _misfit(model.state_dict(), state)
    if misfit:
        raise PredictError(f"{run.checkpoint}: the weights do not fit the run's config ({misfit})")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _misfit(expected: dict, state: dict) -> str:
    """Why `state` does not fit a network of `expected` tensors, in a few words; '' when
    it fits."""
    from medshard.trainers.byol import online_backbone

    if online_backbone(state) is not None:
        return (
            "they are a BYOL run's; fine-tune from them (finetune.checkpoint) and predict "
            "with the fine-tuned run"
        )
    missing = [n for n in expected if n not in state]
    unexpected = [n for n in state if n not in expected]
    shaped = [
        f"{n} {tuple(state[n].shape)} for {tuple(t.shape)}"
        for n, t in expected.items()
        if n in state and tuple(state[n].shape) != tuple(t.shape)
    ]
    parts = [
        f"{len(names)} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for what, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape", shaped),
        )
        if names
    ]
    return "; ".join(parts)


def preprocessing(run: Run):
    """sample -> the model's input tensor, as the validation makes it."""
    ds, config = run.dataset, run.config
    augment = build_augment(config, ds)
    if isinstance(augment, Augment2D):
        channels = batch_channels(ds, augment)
        stats = stats_for(unit_stats(ds), channels)
        copy = training_copy(ds, config.loader.original)

        def image(sample: dict) -> torch.Tensor:
            array = np.asarray(sample["image"])
            if array.ndim == 4:
                raise ValueError(
                    f"a volume of shape {array.shape[1:]} (z, y, x); this run predicts 2D images"
                )
            if array.ndim != 3:
                raise ValueError(f"holds an array of shape {array.shape}, not a 2D image")
            if copy is not None and sample.get("original"):  # the run read training copies
                array = as_training_copy(array, copy)
            crop = None if augment.resize else augment.random_crop
            if crop and (array.shape[1] < crop[0] or array.shape[2] < crop[1]):
                raise ValueError(  # as the validation loader refuses it (check_sizes)
                    f"is {array.shape[1]}x{array.shape[2]}, smaller than the run's crop "
                    f"{crop[0]}x{crop[1]}"
                )
            scale = bit_depth_scale(array.dtype)
            return augment_2d(_tensor(array), augment, None, scale, stats, channels)

        return image
    stats = ds.card.stats.model_dump() if ds.card.stats else None
    channels = batch_channels(ds, augment)

    def volume(sample: dict) -> torch.Tensor:
        array = np.asarray(sample["image"])
        if array.ndim != 4 or array.shape[0] != channels:
            names = ", ".join(ds.card.channel_names or []) or f"{channels} channels"
            raise ValueError(
                f"holds an array of shape {array.shape}; the model takes volumes of "
                f"{channels} channels ({names}) as (c, z, y, x)"
            )
        return augment_3d(_tensor(array), None, augment, None, stats)[0]

    return volume


def _tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # read-only arrays: the transforms never write them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def window(run: Run) -> tuple[int, int, int]:
    """The sliding window: the patch size the run trained on."""
    size = run.config.loader.patch_size
    if size is None:
        raise PredictError(
            f"{run.path}: a segmentation run without loader.patch_size; the sliding window "
            "takes the patch size the run trained on"
        )
    return tuple(size)
