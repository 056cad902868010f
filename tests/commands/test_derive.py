"""`medshard derive` as a user runs it: it says what it did in its own word."""

import shutil

from tests.test_cli import mammo, run  # noqa: F401  (the CLI's module fixture and runner)


def test_derive_reports_a_derive_and_a_rerun_that_does_nothing(mammo, tmp_path):  # noqa: F811
    root, _, _ = mammo
    shutil.copytree(root / "ds", tmp_path / "ds")
    derive = ["derive", str(tmp_path / "ds"), "--train-size", "64"]
    first = run(*derive).stdout
    assert "derived" in first and "ingested" not in first  # the title, however wrapped
    again = run(*derive).stdout
    assert "already derived with these inputs and options" in again
