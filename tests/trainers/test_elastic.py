"""Elastic resume under `accelerate launch` on CPU: an epoch interrupted on 2 processes
goes on on 1 (2 → 1), is interrupted again inside an accumulation, and ends on 2 (1 → 2);
across the three runs, every training sample of the epoch is read exactly once."""

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from medshard.shards.reader import open_dataset
from tests.trainers.real_runs import real_gray_dataset, write_config

STOPPING = "tests.trainers.real_runs:interrupting_cnn"


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    """16 training samples: 2 ranks × 3 per rank (8 per rank: 3, 3, 2), or 1 rank × 3
    per rank × 2 accumulation steps, both a global batch of 6."""
    return real_gray_dataset(tmp_path_factory.mktemp("gray"), per_class=7)


def launch(processes: int, *arguments: str) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    spread = ["--multi_gpu", "--num_processes", "2"] if processes == 2 else ["--num_processes", "1"]
    command = [
        str(accelerate),
        "launch",
        *spread,
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "medshard.trainers",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def audits(folder: Path, ranks: int) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(ranks)]


def test_an_epoch_moves_from_two_processes_to_one_and_back(gray, tmp_path):
    config = str(write_config(tmp_path / "c.yaml", gray, tmp_path))
    common = [f"model.name={STOPPING}", "epochs=1", "loader.batch_size=3"]
    run = tmp_path / "gray"
    last = run / "last"

    # 2 processes: rank 1 alone is signalled in its first step; both ranks stop there
    first = launch(
        2, config, *common, *("model.kwargs." + a for a in ("signal=SIGUSR1", "at=1", "rank=1"))
    )
    assert first.returncode != 0
    stop = f"stopped by SIGUSR1: checkpointed at epoch 1 step 1 in {last}; run the same"
    assert stop in first.stderr, first.stderr[-3000:]
    assert first.stderr.count("stopped by") == 1  # said once, by the main process
    before = audits(run, 2)
    assert [(a["start"], len(a["samples"])) for a in before] == [(0, 3), (0, 3)]

    # 1 process, the same global batch (3 × 1 × 2): signalled in the first batch of an
    # accumulation, it checkpoints at the optimizer step that ends it
    one = ["optim.accumulate=2", "--resume"]
    second = launch(1, config, *common, "model.kwargs.signal=SIGTERM", "model.kwargs.at=1", *one)
    assert f"stopped by SIGTERM: checkpointed at epoch 1 step 4 in {last}" in second.stderr, (
        second.stderr[-3000:]
    )
    middle = audits(run, 1)
    assert [(a["start"], len(a["samples"])) for a in middle] == [(6, 6)]

    # a global batch other than the checkpoint's is refused in one sentence
    refused = launch(1, config, *common, "--resume")
    assert refused.returncode != 0
    assert re.search(
        r"error: \S+/gray/last: cannot resume this mid-epoch checkpoint with a global batch of "
        r"3 \(3 per rank × 1 rank × 1 accumulation step\) because it was taken with a global "
        r"batch of 6 \(3 per rank × 1 rank × 2 accumulation steps\); resume with the same "
        r"global batch, e.g. with optim.accumulate=2",
        refused.stderr,
    ), refused.stderr[-3000:]

    # 2 processes again: the rest of the epoch, and the run ends
    third = launch(2, config, *common, "--resume")
    assert third.returncode == 0, third.stderr[-3000:]
    after = audits(run, 2)
    assert [(a["start"], len(a["samples"])) for a in after] == [(12, 2), (12, 2)]
    assert after[0]["weights_sha256"] == after[1]["weights_sha256"]  # replicas in sync
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]

    read = Counter(key for a in before + middle + after for key in a["samples"])
    rows = open_dataset(gray).manifest.to_pylist()
    assert set(read) == {r["key"] for r in rows if r["split"] == "train"}
    assert set(read.values()) == {1}  # every sample of the epoch exactly once
