"""The tar members every stored sample carries beside its pixels: its labels as `cls`,
`labels.npy` or `target.npy`, and what else is known about it as `json`."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["npy_bytes", "label_members", "json_member"]


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as `.npy` bytes in C order, never pickled."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def label_members(row: dict, label_names: Sequence[str]) -> tuple[list[tuple[str, bytes]], dict]:
    """(members, what the json member records) for a row's `label`, `labels` or `target`."""
    members: list[tuple[str, bytes]] = []
    about: dict[str, Any] = {}
    if row.get("label") is not None:
        members.append(("cls", str(row["label"]).encode()))
        about |= {"label": row["label"], "label_name": label_names[row["label"]]}
    if row.get("labels") is not None:
        members.append(("labels.npy", npy_bytes(np.asarray(row["labels"], np.uint8))))
        about["labels"] = row["labels"]
    if row.get("target") is not None:
        members.append(("target.npy", npy_bytes(np.asarray([row["target"]], np.float32))))
        about["target"] = row["target"]
    return members, about


def json_member(about: dict) -> tuple[str, bytes]:
    return "json", json.dumps(about, sort_keys=True).encode()
