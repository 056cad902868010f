"""`medshard derive` as a user runs it: it says what it did in its own word."""

from tests.conftest import ingest
from tests.real_data import mixed_tile_table
from tests.test_cli import run


def test_derive_reports_a_derive_and_a_rerun_that_does_nothing(tmp_path):
    ingest(mixed_tile_table(tmp_path / "raw", copies=1), tmp_path / "ds", label_col="stage")
    derive = ["derive", str(tmp_path / "ds"), "--train-size", "32"]
    first = run(*derive).stdout
    assert "derived" in first and "ingested" not in first  # the title, however wrapped
    card = (tmp_path / "ds" / "medshard.json").read_bytes()
    again = run(*derive).stdout
    assert "already derived with these inputs and options; nothing to do\n" in again
    assert (tmp_path / "ds" / "medshard.json").read_bytes() == card  # nothing rebuilt
