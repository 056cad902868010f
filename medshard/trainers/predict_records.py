"""What `medshard predict` writes: one JSON record per input (its probabilities, labels,
value or label map, or its error) and a summary, in the document that
docs/predictions.schema.json describes (format `medshard-predictions`, version 1)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import torch

from medshard.errors import MedshardError

__all__ = [
    "FORMAT",
    "VERSION",
    "OutputError",
    "ThresholdError",
    "check_output",
    "outside_datasets",
    "output_records",
    "parse_thresholds",
    "summary",
    "write_document",
]

FORMAT, VERSION = "medshard-predictions", 1


class ThresholdError(MedshardError, ValueError):
    """A --threshold that does not give a probability for each label."""


def parse_thresholds(text: str, classes: list[str]) -> list[float]:
    """One threshold per label from `0.5` (all), `0.4,0.6,0.5` (in label order) or
    `mass=0.4,calcification=0.6` (the others 0.5)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    values = [0.5] * len(classes)
    try:
        if all("=" in p for p in parts) and parts:
            for part in parts:
                name, value = (s.strip() for s in part.split("=", 1))
                if name not in classes:
                    raise ThresholdError(
                        f"--threshold names {name!r}, which is not a label of this run "
                        f"({', '.join(classes)})"
                    )
                values[classes.index(name)] = float(value)
        elif len(parts) == 1:
            values = [float(parts[0])] * len(classes)
        elif len(parts) == len(classes):
            values = [float(p) for p in parts]
        else:
            raise ThresholdError(
                f"--threshold {text!r}: give one value, one per label ({len(classes)}: "
                f"{', '.join(classes)}), or name=value pairs"
            )
    except ValueError as exc:
        if isinstance(exc, ThresholdError):
            raise
        raise ThresholdError(f"--threshold {text!r}: not a number ({exc})") from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ThresholdError(f"--threshold {text!r}: {bad[0]:g} is not a probability in [0, 1]")
    return values


def _truth(sample: dict, task: str, classes: list[str]):
    if task == "classification" and "label" in sample:
        return classes[int(sample["label"])]
    if task == "multilabel" and "labels" in sample:
        return [c for c, v in zip(classes, sample["labels"]) if float(v) >= 0.5]
    if task == "regression" and "target" in sample:
        return float(sample["target"])
    return None


def output_records(
    task: str,
    classes: list[str],
    output: torch.Tensor,
    names: list[str],
    samples: list[dict],
    thresholds: list[float],
    target: str | None,
) -> list[dict]:
    """The records of one batch of a classification, multi-label or regression model."""
    records = []
    if task == "classification":
        probabilities = output.float().softmax(-1).cpu()
    elif task == "multilabel":
        probabilities = output.float().sigmoid().cpu()
    else:
        probabilities = output.float().view(-1).cpu()
    for name, sample, row in zip(names, samples, probabilities):
        record: dict = {"input": name}
        if task == "regression":
            record |= {"value": float(row), "target": target}
        else:
            values = [float(p) for p in row]
            record["probabilities"] = dict(zip(classes, values))
            if task == "classification":
                best = max(range(len(values)), key=values.__getitem__)
                record |= {"top": classes[best], "top_probability": values[best]}
            else:
                record["labels"] = [c for c, p, t in zip(classes, values, thresholds) if p >= t]
        truth = _truth(sample, task, classes)
        if truth is not None:
            record["truth"] = truth
        records.append(record)
    return records


def summary(task: str, classes: list[str], records: list[dict]) -> dict:
    """Counts of inputs, predictions and failures, and of each predicted label (the top
    class; each label over its threshold; each label present in a label map)."""
    done = [r for r in records if "error" not in r]
    counts: Counter = Counter()
    if task == "classification":
        counts.update(r["top"] for r in done)
    elif task == "multilabel":
        counts.update(label for r in done for label in r["labels"])
    elif task == "segmentation":
        counts.update(label for r in done for label, n in r["voxels"].items() if n)
    out = {"inputs": len(records), "predicted": len(done), "failed": len(records) - len(done)}
    out["counts"] = {c: counts.get(c, 0) for c in classes} if task != "regression" else {}
    if task == "regression" and done:
        values = [r["value"] for r in done]
        out |= {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    return out


class OutputError(MedshardError, ValueError):
    """An --output-json that would replace a file that is not a predictions document."""


def outside_datasets(path: Path, option: str) -> None:
    """Refuse an output `path` inside a medshard dataset: a dataset holds only what its
    card lists, and re-ingesting with --overwrite would remove what predict put there."""
    from medshard.shards.layout import CARD_NAME

    resolved = Path(path).resolve()
    for folder in (resolved, *resolved.parents):
        if (folder / CARD_NAME).is_file():
            raise OutputError(
                f"{path}: {option} lies inside the medshard dataset {folder}; predictions "
                "never go into a dataset: give a path outside it"
            )


def check_output(path: Path) -> None:
    """Refuse an --output-json that is a folder or a file other than a predictions
    document of medshard's (an image given by mistake, a table): it is never replaced;
    nor one inside a medshard dataset."""
    path = Path(path)
    outside_datasets(path, "--output-json")
    if path.is_dir():
        raise OutputError(f"{path}: --output-json is a folder; give a file name")
    if path.exists():
        try:
            ours = json.loads(path.read_text()).get("format") == FORMAT
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise OutputError(
                f"{path}: exists and is not a predictions document of medshard's; it is never "
                "replaced: give another --output-json"
            )


def write_document(document: dict, path: Path) -> None:
    """Write the predictions as JSON, replacing `path` only once complete, and only when
    it is an earlier predictions document."""
    path = Path(path)
    check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
    os.replace(partial, path)
