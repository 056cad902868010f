"""`medshard predict`: a trained run's model on new inputs. The run's saved config fixes
the network and the preprocessing, which is exactly the validation's (the evaluation
transform, with the normalisation statistics and label names of the training dataset's
card); images are predicted in batches, volumes of a segmentation run by sliding window
into NIfTI label maps (predict_volumes.py). A bad input becomes a record with its error."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medshard.errors import MedshardError
from medshard.loaders import Augment2D, batch_channels
from medshard.loaders.augment import augment_2d, augment_3d
from medshard.loaders.frame_format import bit_depth_scale, stats_for, unit_stats
from medshard.shards.reader import Dataset, open_dataset
from medshard.trainers.config import TrainConfig, load_config
from medshard.trainers.finetune import read_state_dict
from medshard.trainers.models import build_model
from medshard.trainers.predict_inputs import Input, as_training_copy, training_copy
from medshard.trainers.predict_records import FORMAT, VERSION, output_records, summary
from medshard.trainers.predict_volumes import segment_record
from medshard.trainers.setup import build_augment
from medshard.trainers.tasks import Task, build_task

__all__ = ["PREDICTED", "PredictError", "Run", "open_run", "predict", "run_copy"]

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
        raise PredictError(
            f"{config.dataset}: the run's training dataset cannot be opened ({exc}); predict "
            "takes the label names and normalisation statistics from its card"
        ) from exc
    return Run(folder, checkpoint, config, ds, build_task(config, ds))


def run_copy(run: Run):
    """How the run's training copies were made (a TrainCopy), when it read them."""
    return training_copy(run.dataset, run.config.loader.original)


def _model(run: Run, device: torch.device) -> torch.nn.Module:
    """The run's network with the checkpoint's weights, every tensor matched."""
    ds, config = run.dataset, run.config
    in_channels = batch_channels(ds, build_augment(config, ds))
    dims = 3 if ds.card.kind == "volumes" else 2
    model = build_model(config, dims, in_channels, run.task.out_channels)
    try:
        model.load_state_dict(read_state_dict(run.checkpoint), strict=True)
    except RuntimeError as exc:
        raise PredictError(
            f"{run.checkpoint}: the weights do not fit the run's config "
            f"({str(exc).strip().splitlines()[-1].strip()})"
        ) from exc
    return model.to(device).eval()


def _preprocess(run: Run):
    """sample -> the model's input tensor, as the validation makes it."""
    ds, config = run.dataset, run.config
    augment = build_augment(config, ds)
    if isinstance(augment, Augment2D):
        channels = batch_channels(ds, augment)
        stats = stats_for(unit_stats(ds), channels)
        copy = training_copy(ds, config.loader.original)

        def image(sample: dict) -> torch.Tensor:
            array = np.asarray(sample["image"])
            if array.ndim != 3:
                raise ValueError(f"holds an array of shape {array.shape}, not a 2D image")
            if copy is not None and sample.get("original"):  # the run read training copies
                array = as_training_copy(array, copy)
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


def _roi(run: Run) -> tuple[int, int, int]:
    """The sliding window: the patch size the run trained on."""
    size = run.config.loader.patch_size
    if size is None:
        raise PredictError(
            f"{run.path}: a segmentation run without loader.patch_size; the sliding window "
            "takes the patch size the run trained on"
        )
    return tuple(size)


@contextmanager
def _progress(total: int, show: bool):
    """A progress bar over the inputs; yields `advance()`."""
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show) as progress:
        bar = progress.add_task("predict", total=total)
        yield lambda: progress.advance(bar)


def _truth_batch(samples: list[dict]) -> dict | None:
    """The labels of a batch as the task's metrics take them, if every sample has them."""
    for name in ("label", "labels", "target"):
        if samples and all(name in s for s in samples):
            return {name: torch.as_tensor(np.stack([np.asarray(s[name]) for s in samples]))}
    return None


def predict(
    run: Run,
    inputs: list[Input],
    *,
    batch_size: int = 64,
    device: str | None = None,
    thresholds: list[float] | None = None,
    output_dir: Path | None = None,
    show: bool = True,
) -> dict:
    """The predictions document (predict_records): one record per input, in order, a
    summary, and the task's metrics over the inputs that carry labels."""
    task, classes = run.task, run.classes
    if task.name == "segmentation" and output_dir is None:
        raise PredictError("a segmentation run writes its label maps as NIfTI: give --output-dir")
    if device == "cuda" and not torch.cuda.is_available():
        raise PredictError("--device cuda: no CUDA device is available here")
    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if task.name == "segmentation":
        _roi(run)  # refused before any input is read
    model, prepare = _model(run, where), _preprocess(run)
    thresholds = thresholds or [0.5] * len(classes)
    metrics = task.metrics().to(where)
    measured = False
    records: list[dict | None] = []
    pending: list[tuple[int, torch.Tensor, dict]] = []

    def flush() -> None:
        nonlocal measured
        if not pending:
            return
        names = [records[i]["input"] for i, _, _ in pending]
        samples = [s for _, _, s in pending]
        try:
            with torch.no_grad():
                output = model(torch.stack([t for _, t, _ in pending]).to(where))
        except RuntimeError as exc:
            for i, _, _ in pending:
                records[i] = {"input": records[i]["input"], "error": f"the model failed ({exc})"}
        else:
            made = output_records(
                task.name, classes, output, names, samples, thresholds, run.dataset.card.target_name
            )
            for (i, _, _), record in zip(pending, made):
                records[i] = record
            truth = _truth_batch(samples)
            if truth is not None:
                task.update(metrics, output, {k: v.to(where) for k, v in truth.items()})
                measured = True
        pending.clear()

    with _progress(len(inputs), show) as advance:
        for item in inputs:
            try:
                sample = item.load()
                tensor = prepare(sample)
            except (MedshardError, ValueError, OSError) as exc:
                records.append({"input": item.name, "error": str(exc)})
                advance()
                continue
            if task.name == "segmentation":
                roi, classes_k = _roi(run), run.task.mask_classes
                record, logits = segment_record(
                    model, item.name, sample, tensor, roi, classes_k, batch_size, where, output_dir
                )
                records.append(record)
                if "mask" in sample:
                    mask = torch.as_tensor(np.asarray(sample["mask"]))[None].to(where)
                    task.update(metrics, logits[None], {"mask": mask})
                    measured = True
            else:
                if pending and pending[0][1].shape != tensor.shape:
                    flush()  # a batch holds one size
                records.append({"input": item.name})
                pending.append((len(records) - 1, tensor, sample))
                if len(pending) == batch_size:
                    flush()
            advance()
        flush()
    document = {
        "format": FORMAT,
        "version": VERSION,
        "run": str(run.path),
        "checkpoint": str(run.checkpoint),
        "task": task.name,
        "classes": classes,
    }
    if task.name == "multilabel":
        document["thresholds"] = dict(zip(classes, thresholds))
    if task.name == "regression":
        document["target"] = run.dataset.card.target_name
    document["records"] = records
    document["summary"] = summary(task.name, classes, records)
    if measured:
        document["metrics"] = {
            f"test_{name}": (v.item() if v.numel() == 1 else v.tolist())
            for name, v in metrics.compute().items()
        }
    return document
