"""--out is guarded, locked for one build at a time, and recovered after a killed build."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medshard.errors import DatasetError
from medshard.ingest.output import (
    OutputLock,
    Staging,
    check_output,
    claim_output,
    guard_output,
    recover_output,
)
from medshard.ingest.tiff import TiffIngestOptions
from medshard.shards.layout import CARD_NAME
from tests.conftest import ingest
from tests.real_data import mixed_tile_table


def files(folder: Path) -> dict[Path, bytes]:
    """Every file under `folder` (hidden ones included) with its bytes."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def real_dataset(tmp_path):
    """A dataset ingested from scikit-image's tiles (gray, RGB, RGBA, palette, 8/16 bit)."""
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.0)
    return tmp_path / "ds"


# --- the guard: --out is never an input -------------------------------------------------


@pytest.mark.parametrize(
    ("out", "relation"),
    [("raw", "is"), ("raw/ds", "lies inside"), (".", "contains"), ("raw/batch0", "lies inside")],
)
def test_an_out_that_touches_an_input_is_refused(tmp_path, out, relation):
    (tmp_path / "raw/batch0").mkdir(parents=True)
    with pytest.raises(DatasetError, match=f"--out {relation} .*raw, which this ingest reads"):
        guard_output(tmp_path / out, [tmp_path / "raw"])


def test_a_symlink_to_an_input_is_resolved_before_comparing(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "raw")
    with pytest.raises(DatasetError, match="--out is"):
        guard_output(tmp_path / "link", [tmp_path / "raw"])
    with pytest.raises(DatasetError, match="--out lies inside"):
        guard_output(tmp_path / "link/ds", [tmp_path / "raw"])


def test_a_sibling_of_the_inputs_is_accepted(tmp_path):
    (tmp_path / "raw").mkdir()
    guard_output(tmp_path / "ds", [tmp_path / "raw", tmp_path / "raw/labels.csv"])
    guard_output(tmp_path / "raw-ds", [tmp_path / "raw"])  # a name prefix is no parent


def test_tiff_inputs_are_its_root_and_its_labels():
    options = TiffIngestOptions(out=Path("ds"), root=Path("raw"), labels=Path("c.csv"))
    assert options.inputs() == [Path("raw"), Path("c.csv")]


# --- only a medshard dataset is ever replaced -------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_the_users_is_refused_and_kept(tmp_path, overwrite):
    thesis = tmp_path / "thesis"
    (thesis / "chapters").mkdir(parents=True)
    (thesis / "chapters/one.tex").write_text("results")
    before = files(thesis)
    with pytest.raises(
        DatasetError,
        match="no medshard dataset, so it is never replaced, not even with --overwrite",
    ):
        check_output(thesis, "fingerprint", overwrite)
    assert files(thesis) == before


def test_a_file_at_out_is_refused(tmp_path):
    (tmp_path / "ds").write_text("mine")
    with pytest.raises(DatasetError, match="exists and is not a directory"):
        check_output(tmp_path / "ds", "fingerprint", True)


def test_a_dataset_is_replaced_only_when_asked(real_dataset):
    same = json.loads((real_dataset / CARD_NAME).read_text())["fingerprint"]
    assert check_output(real_dataset, same, overwrite=False) is True
    assert check_output(real_dataset, same, overwrite=True) is False
    with pytest.raises(DatasetError, match="holds a different dataset"):
        check_output(real_dataset, "other", overwrite=False)
    assert check_output(real_dataset, "other", overwrite=True) is False


def test_ingest_into_the_raw_folder_is_refused_and_leaves_it_byte_identical(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    before = files(tmp_path)
    for out in (tmp_path / "raw", tmp_path / "raw/batch0", tmp_path):
        with pytest.raises(DatasetError, match="which this ingest reads"):
            ingest(table, out, label_col="stage", overwrite=True)
    assert files(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


# --- staging and recovery ---------------------------------------------------------------


def test_commit_swaps_the_dataset_and_leaves_nothing_beside_it(real_dataset):
    with Staging(real_dataset) as staging:
        (staging.dir / CARD_NAME).write_text("{}")
        staging.commit()
    assert (real_dataset / CARD_NAME).read_text() == "{}"
    assert sorted(p.name for p in real_dataset.parent.iterdir()) == ["ds", "raw"]


def test_a_failed_build_removes_its_staging(tmp_path):
    with pytest.raises(RuntimeError), Staging(tmp_path / "ds") as staging:
        (staging.dir / "part").write_text("half")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def crash_between_the_renames(out: Path) -> Path:
    """The state a kill between the two renames of --overwrite leaves: the old dataset in
    `.NAME.old-*`, the new one complete in `.NAME.partial-*`, nothing at --out."""
    old = out.parent / f".{out.name}.old-0badc0de"
    out.rename(old)
    partial = out.parent / f".{out.name}.partial-1badc0de"
    partial.mkdir()
    (partial / CARD_NAME).write_text("{}")
    return old


def test_recovery_restores_the_dataset_an_interrupted_overwrite_moved_aside(real_dataset):
    before = files(real_dataset)
    old = crash_between_the_renames(real_dataset)
    notes = recover_output(real_dataset)
    assert files(real_dataset) == before
    assert notes == [
        f"{real_dataset}: restored the dataset that an interrupted --overwrite had moved to "
        f"{old.name}",
        f"{real_dataset}: removed .ds.partial-1badc0de, left unfinished by an interrupted ingest",
    ]
    assert sorted(p.name for p in real_dataset.parent.iterdir()) == ["ds", "raw"]


def test_recovery_drops_an_old_dataset_already_replaced(real_dataset):
    old = real_dataset.parent / ".ds.old-0badc0de"
    old.mkdir()
    (old / CARD_NAME).write_text("{}")
    before = files(real_dataset)
    assert recover_output(real_dataset) == [
        f"{real_dataset}: removed .ds.old-0badc0de, replaced by an interrupted --overwrite"
    ]
    assert files(real_dataset) == before and not old.exists()


def test_recovery_touches_nothing_but_its_own_leftovers(tmp_path):
    out = tmp_path / "ds"
    mine = [tmp_path / ".ds.partial-notes", tmp_path / ".ds.old-1234", tmp_path / "ds.old-0badc0de"]
    for folder in mine:
        folder.mkdir()
        (folder / "keep.txt").write_text("mine")
    incomplete = tmp_path / ".ds.old-0badc0de"  # no card: not a dataset to restore
    incomplete.mkdir()
    (incomplete / "keep.txt").write_text("mine")
    before = files(tmp_path)
    assert recover_output(out) == []
    assert files(tmp_path) == before and not out.exists()


def test_claim_recovers_first_and_removes_its_own_staging_on_failure(real_dataset):
    old = crash_between_the_renames(real_dataset)
    with pytest.raises(RuntimeError), claim_output(real_dataset) as claim:
        assert f"moved to {old.name}" in claim.notes[0]
        assert (real_dataset / CARD_NAME).is_file()
        Staging(real_dataset)  # a build that dies without its context cleaning up
        raise RuntimeError("killed")
    assert sorted(p.name for p in real_dataset.parent.iterdir()) == ["ds", "raw"]
    assert not claim.changed()


# --- the lock: one build per --out, with real processes ---------------------------------

HOLD = """
import sys, time
from pathlib import Path
from medshard.ingest.output import OutputLock
OutputLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock on tmp_path/ds."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "ds")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def test_a_second_build_is_refused_naming_the_running_one(tmp_path, holder):
    with pytest.raises(DatasetError) as caught:
        OutputLock(tmp_path / "ds").acquire()
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'ds'}: another ingest is writing this dataset ")
    assert f"(pid {holder.pid} on {socket.gethostname()}, started " in message
    assert message.endswith("wait until it ends or choose another --out")


def test_the_lock_of_a_killed_build_is_taken_over_with_a_note(tmp_path, holder):
    holder.kill()
    holder.wait()
    lock = OutputLock(tmp_path / "ds")
    lock.acquire()
    (note,) = lock.notes
    assert note.startswith(
        f"{tmp_path / 'ds'}: took over the lock of an ingest that is no longer running "
        f"(pid {holder.pid} on {socket.gethostname()}, started "
    )
    assert json.loads((tmp_path / ".ds.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert list(tmp_path.iterdir()) == []


def test_a_released_lock_is_free_and_leaves_no_file(tmp_path):
    with OutputLock(tmp_path / "ds") as lock:
        with pytest.raises(DatasetError, match=f"pid {os.getpid()} "):
            OutputLock(tmp_path / "ds").acquire()
        assert lock.notes == []
    with OutputLock(tmp_path / "ds") as again:
        assert again.notes == []
    assert list(tmp_path.iterdir()) == []


def test_a_users_file_inside_a_dataset_stops_its_replacement(tmp_path):
    from tests.conftest import ingest
    from tests.real_data import mixed_tile_table

    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage")
    (tmp_path / "ds" / "NOTES.txt").write_text("my notes")
    (tmp_path / "ds" / "analysis").mkdir()
    (tmp_path / "ds" / "analysis" / "r.csv").write_text("1")
    with pytest.raises(DatasetError, match=r"holds 'NOTES.txt' and 1 more files, which the"):
        ingest(table, tmp_path / "ds", label_col="stage", overwrite=True, seed=3)
    (tmp_path / "raw" / "batch0" / "ihc_rgb8.png").touch()  # a changed input: a rebuild
    with pytest.raises(DatasetError, match=r"holds 'NOTES.txt'"):
        ingest(table, tmp_path / "ds", label_col="stage")
    assert (tmp_path / "ds" / "NOTES.txt").read_text() == "my notes"
    assert (tmp_path / "ds" / "analysis" / "r.csv").read_text() == "1"
