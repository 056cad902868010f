"""The command line interrupted and raced, as a user meets it: a signal mid-ingest keeps the
old dataset and removes the staging; a second ingest into one --out is refused naming the
running one; a killed one's leftovers are recovered (real subprocesses)."""

import contextlib
import errno
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ingest
from tests.real_data import mixed_tile_table, real_nifti_table
from tests.test_cli import ENV, MEDSHARD, files, images_ingest, run, stderr_lines


def stalled_mri_table(root: Path) -> tuple[Path, Path]:
    """A subject table over nibabel's real `standard.nii.gz` plus one subject whose `.npy` is
    a named pipe: reading it waits for a writer, so the ingest stays mid-run until the test
    lets it go."""
    table = real_nifti_table(root, names=("standard",))
    pipe = root / "stalled.npy"
    os.mkfifo(pipe)
    with open(table, "a") as handle:
        handle.write("stalled,stalled.npy,standard_seg.nii.gz,old\n")
    return table, pipe


def start_stalled_ingest(table: Path, out: Path) -> subprocess.Popen:
    """`medshard ingest nifti ... --overwrite` in its own process group (as a shell runs it)."""
    flags = ["--modalities", "image", "--mask-col", "seg", "--key-col", "subject"]
    return subprocess.Popen(
        [MEDSHARD, "ingest", "nifti", str(table), "--out", str(out), *flags]
        + ["--patch-size", "4,4,4", "--workers", "1", "--overwrite"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )


def hold_the_pipe(pipe: Path, process: subprocess.Popen) -> int:
    """Wait until the ingest opens the pipe to read it (it holds --out and its staging then);
    the writing end returned keeps the read waiting until it is closed."""
    while True:
        try:
            return os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert process.poll() is None, process.communicate()
        process_wait(process, 0.05)


def process_wait(process: subprocess.Popen, seconds: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(seconds)


def staging(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


@pytest.fixture
def old_dataset(tmp_path):
    """A dataset of scikit-image tiles at tmp_path/ds, and its files."""
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.0)
    return tmp_path / "ds", files(tmp_path / "ds")


@pytest.mark.parametrize(
    ("signum", "line"),
    [
        (signal.SIGTERM, "terminated; nothing was changed at"),
        (signal.SIGINT, "interrupted; nothing was changed at"),
    ],
)
def test_a_signal_mid_ingest_removes_the_staging_and_keeps_the_old_dataset(
    tmp_path, old_dataset, signum, line
):
    out, before = old_dataset
    table, pipe = stalled_mri_table(tmp_path / "mri")
    process = start_stalled_ingest(table, out)
    writer = hold_the_pipe(pipe, process)
    try:
        assert staging(out)
        if signum == signal.SIGINT:  # Ctrl-C: the terminal signals the whole process group
            os.killpg(process.pid, signum)
        else:  # kill PID: the main process only
            process.send_signal(signum)
        while staging(out):  # it stopped and cleaned up before the stalled read ends
            assert process.poll() is None, process.communicate()
            process_wait(process, 0.05)
    finally:
        os.close(writer)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signum
    assert [x for x in stderr.splitlines() if x.strip()] == [f"{line} {out}"]
    assert files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "mri", "raw"]


def test_a_second_ingest_is_refused_and_a_killed_ones_leftovers_are_recovered(
    tmp_path, old_dataset
):
    out, before = old_dataset
    table, pipe = stalled_mri_table(tmp_path / "mri")
    first = start_stalled_ingest(table, out)
    writer = hold_the_pipe(pipe, first)
    try:
        second = run(*images_ingest(tmp_path / "raw/labels.csv", out, "--overwrite"), ok=False)
        assert second.returncode == 1
        (message,) = stderr_lines(second)
        assert message.startswith(f"error: {out}: another ingest is writing this dataset ")
        assert f"(pid {first.pid} on {socket.gethostname()}, started " in message
        assert files(out) == before
        os.killpg(first.pid, signal.SIGKILL)  # kill -9: no cleanup at all
        first.wait()
    finally:
        os.close(writer)
    (left,) = staging(out)
    assert (tmp_path / ".ds.lock").exists()

    third = run(*images_ingest(tmp_path / "raw/labels.csv", out, "--overwrite", "--seed", "1"))
    notes = stderr_lines(third)
    assert notes[0].startswith(
        f"{out}: took over the lock of an ingest that is no longer running (pid {first.pid} "
    )
    assert notes[1:] == [f"{out}: removed {left.name}, left unfinished by an interrupted ingest"]
    assert "ingested" in third.stdout and files(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "mri", "raw"]
