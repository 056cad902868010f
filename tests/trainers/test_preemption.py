"""Training that survives preemption, on real pixels: a run killed with SIGKILL at random
steps, or stopped by SIGTERM or SIGUSR1, resumes to exactly the weights of a run that
never stopped (compared by sha256); mid-epoch validations are never counted half; a
mid-epoch resume with another global batch is refused in one sentence."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from medshard.cli import app
from medshard.trainers.checkpoint import CheckpointError
from medshard.trainers.cli import run
from medshard.trainers.config import ConfigError, load_config
from medshard.trainers.preemption import CheckpointClock, Flags, StopRequests, signal_name
from tests.trainers.real_runs import real_gray_dataset, write_config

STOPPING = "tests.trainers.real_runs:interrupting_cnn"
EPOCHS, BATCHES = 3, 6  # 16 training samples in batches of 3: five of 3 and one of 1
KILLS = random.Random(14).sample(range(2, EPOCHS * BATCHES + 1), 3)  # reproducible


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    return real_gray_dataset(tmp_path_factory.mktemp("gray"), per_class=7)


def overrides(*more: str) -> list[str]:
    return [
        f"model.name={STOPPING}",
        f"epochs={EPOCHS}",
        "loader.batch_size=3",
        "checkpoint.every_steps=2",
        *more,
    ]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights(folder) -> tuple[str, str]:
    """The sha256 of the weights and of the optimizer's state in `last/`."""
    last = folder / "gray/last"
    return sha256(last / "model.safetensors"), sha256(last / "optimizer.safetensors")


@pytest.fixture(scope="module")
def reference(gray, tmp_path_factory):
    """Runs that never stop, by accumulation steps: their weights and validations."""
    out = {}
    for accumulate in (1, 2):
        root = tmp_path_factory.mktemp(f"straight{accumulate}")
        config = write_config(root / "c.yaml", gray, root)
        in_process_of_its_own(config, f"optim.accumulate={accumulate}")
        out[accumulate] = weights(root)
    root = tmp_path_factory.mktemp("validating")
    config = write_config(root / "c.yaml", gray, root)
    in_process_of_its_own(config, "checkpoint.validation=true")
    out["validations"] = json.loads((root / "gray/validations.json").read_text())
    out["validated"] = weights(root)
    return out


def killed(config, *more: str) -> subprocess.CompletedProcess:
    """`python -m medshard.trainers` in a process of its own, as a scheduler runs it, with
    this process's thread count (a CPU's sums depend on how they are split)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-m", "medshard.trainers", str(config), *overrides(*more)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def in_process_of_its_own(config, *more: str) -> None:
    """A run that must end exactly as the killed one's resume: in a fresh process like it,
    since what earlier tests left in this one (threads, kernels) can change a CPU's sums."""
    result = killed(config, *more)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("at", KILLS)
def test_a_run_killed_at_a_random_step_resumes_to_the_same_weights(gray, tmp_path, reference, at):
    config = write_config(tmp_path / "c.yaml", gray, tmp_path)
    result = killed(config, "model.kwargs.signal=SIGKILL", f"model.kwargs.at={at}")
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    card = json.loads((tmp_path / "gray/last/checkpoint.json").read_text())
    done = card["epoch"] * BATCHES + card["step"]  # the last complete checkpoint
    assert done < at and (card["step"] % 2 == 0)
    in_process_of_its_own(config, "--resume")
    assert weights(tmp_path) == reference[1]


def where_it_stops(at: int, accumulate: int) -> str:
    """The flag raised in step `at` is seen by that step's gather; the run stops at the
    next optimizer step, or after the epoch when that is its last step."""
    epoch, step = divmod(at - 1, BATCHES)
    step += 1
    while step % accumulate and step < BATCHES:
        step += 1
    whole = " (the epoch complete)" if step == BATCHES else ""
    return f"epoch {epoch + 1} step {step}{whole}"


@pytest.mark.parametrize(
    ("name", "accumulate", "at"), [("SIGTERM", 1, 6), ("SIGUSR1", 2, 9), ("SIGTERM", 2, 8)]
)
def test_a_signal_checkpoints_and_exits_75_then_resume_ends_the_same(
    gray, tmp_path, reference, name, accumulate, at
):
    config = write_config(tmp_path / "c.yaml", gray, tmp_path)
    stop = [f"optim.accumulate={accumulate}", f"model.kwargs.signal={name}"]
    result = killed(config, *stop, f"model.kwargs.at={at}")
    assert result.returncode == 75, result.stderr[-2000:]
    message = (
        f"stopped by {name}: checkpointed at {where_it_stops(at, accumulate)} in "
        f"{tmp_path / 'gray/last'}; run the same command with --resume to continue"
    )
    assert message in " ".join(result.stderr.split())
    in_process_of_its_own(config, f"optim.accumulate={accumulate}", "--resume")
    assert weights(tmp_path) == reference[accumulate]


def test_a_killed_validation_is_run_again_whole(gray, tmp_path, reference):
    """Killed inside the second mid-epoch validation (in its second batch): the resumed
    run validates there again, and records exactly what the run that never stopped did."""
    config = write_config(tmp_path / "c.yaml", gray, tmp_path)
    result = killed(
        config,
        "checkpoint.validation=true",
        "model.kwargs.signal=SIGKILL",
        "model.kwargs.during=validation",
        "model.kwargs.at=4",
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    before = json.loads((tmp_path / "gray/validations.json").read_text())
    assert before == reference["validations"][:1]  # nothing half counted
    in_process_of_its_own(config, "checkpoint.validation=true", "--resume")
    validations = json.loads((tmp_path / "gray/validations.json").read_text())
    assert validations == reference["validations"]
    assert [(v["epoch"], v["step"]) for v in validations] == [
        (e, s) for e in (1, 2, 3) for s in (2, 4)
    ]
    # validating at checkpoints changes nothing in training
    assert weights(tmp_path) == reference["validated"] == reference[1]


def test_a_mid_epoch_resume_with_another_global_batch_is_refused(gray, tmp_path):
    config = write_config(tmp_path / "c.yaml", gray, tmp_path)
    stopped = CliRunner().invoke(
        app, ["train", str(config), *overrides("model.kwargs.signal=SIGTERM", "model.kwargs.at=3")]
    )
    assert stopped.exit_code == 75, stopped.output
    with pytest.raises(CheckpointError) as refused:
        run(str(config), overrides("loader.batch_size=1"), resume=True, quiet=True)
    assert str(refused.value) == (
        f"{tmp_path / 'gray/last'}: cannot resume this mid-epoch checkpoint with a global "
        "batch of 1 (1 per rank × 1 rank × 1 accumulation step) because it was taken with a "
        "global batch of 3 (3 per rank × 1 rank × 1 accumulation step); resume with the same "
        "global batch, e.g. with optim.accumulate=3"
    )
    # the same global batch in three accumulation steps of 1 resumes, and reads the rest once
    first = json.loads((tmp_path / "gray/rank0.json").read_text())
    run(
        str(config),
        overrides("loader.batch_size=1", "optim.accumulate=3", "epochs=1"),
        resume=True,
        quiet=True,
    )
    rest = json.loads((tmp_path / "gray/rank0.json").read_text())
    assert (first["epoch"], rest["epoch"], rest["start"]) == (1, 1, 9)
    assert len(first["samples"]) == 9 and not set(first["samples"]) & set(rest["samples"])
    assert len(first["samples"] + rest["samples"]) == 16


def test_stop_requests_take_the_first_signal_and_give_the_handlers_back():
    previous = signal.getsignal(signal.SIGUSR1)
    with StopRequests() as stops:
        assert stops.signal == 0
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert signal_name(stops.signal) == "SIGUSR1"  # the process lives on
    assert signal.getsignal(signal.SIGUSR1) == previous


def test_flags_keep_the_signal_and_the_clock_of_any_rank():
    assert Flags(stop=0, late=True) | Flags(stop=15) == Flags(stop=15, late=True)
    clock = CheckpointClock(every_steps=3, every_minutes=None)
    assert [s for s in range(1, 10) if clock.step_due(s)] == [3, 6, 9] and not clock.late()
    assert not CheckpointClock(None, 60).step_due(3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("checkpoint.every_steps=0", "checkpoint.every_steps: Input should be greater than or"),
        ("checkpoint.every_minutes=0", "checkpoint.every_minutes: Input should be greater than"),
        ("checkpoint.every=5", "checkpoint.every: unknown key"),
    ],
)
def test_checkpoint_options_that_never_checkpoint_are_refused(tmp_path, override, message):
    config = write_config(tmp_path / "c.yaml", tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_config(config, [override])


def test_the_clock_is_late_once_its_minutes_are_up(monkeypatch):
    from medshard.trainers import preemption

    now = [1000.0]
    monkeypatch.setattr(preemption.time, "monotonic", lambda: now[0])
    clock = CheckpointClock(every_steps=None, every_minutes=30)
    now[0] += 29 * 60
    assert not clock.late()
    now[0] += 60
    assert clock.late()
    clock.reset()  # a checkpoint was written
    assert not clock.late()
