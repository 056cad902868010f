"""`medshard predict`: a trained run's model (predict_run.py) on new inputs, with exactly
the validation's preprocessing; images are predicted in batches, volumes of a
segmentation run by sliding window into NIfTI label maps (predict_volumes.py). A bad
input becomes a record with its error."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medshard.errors import MedshardError
from medshard.trainers.predict_inputs import Input
from medshard.trainers.predict_records import FORMAT, VERSION, output_records, summary
from medshard.trainers.predict_run import (
    PREDICTED,
    PredictError,
    Run,
    load_model,
    open_run,
    preprocessing,
    run_copy,
    window,
)
from medshard.trainers.predict_volumes import label_map_paths, segment_record

__all__ = ["PREDICTED", "PredictError", "Run", "open_run", "predict", "run_copy"]


def _line(message: str) -> str:
    """An error as one line (libraries' messages may span several)."""
    return " ".join(message.split())


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
    maps: list[Path] = []
    if task.name == "segmentation":  # refused before any input is read
        roi = window(run)
        maps = label_map_paths(output_dir, [item.name for item in inputs])
    model, prepare = load_model(run, where), preprocessing(run)
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
                records[i] = {
                    "input": records[i]["input"],
                    "error": _line(f"the model failed ({exc})"),
                }
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
                records.append({"input": item.name, "error": _line(str(exc))})
                advance()
                continue
            if task.name == "segmentation":
                try:
                    record, logits = segment_record(
                        model,
                        item.name,
                        sample,
                        tensor,
                        roi,
                        task.mask_classes,
                        batch_size,
                        where,
                        maps[len(records)],
                    )
                except (RuntimeError, OSError) as exc:
                    records.append(
                        {"input": item.name, "error": _line(f"cannot be segmented ({exc})")}
                    )
                    advance()
                    continue
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
