"""`medshard inspect` and `verify` on damaged real datasets: one sentence, exit 1, never a
traceback."""

import pytest
from typer.testing import CliRunner

from medshard.cli import app
from medshard.shards.checksums import MISMATCH
from medshard.shards.layout import CARD_NAME, MANIFEST_NAME
from tests.conftest import ingest
from tests.real_data import mixed_tile_table
from tests.shards.conftest import flip_byte


@pytest.fixture
def real_images(tmp_path):
    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.0)
    return tmp_path / "ds"


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


def refused(result) -> bool:
    """Exit 1 through typer, the one sentence on the console, no traceback."""
    return (
        result.exit_code == 1
        and isinstance(result.exception, SystemExit)
        and "Traceback" not in result.output
    )


def test_verify_and_inspect_name_a_damaged_manifest_in_one_sentence(real_images):
    assert run("verify", str(real_images)).exit_code == 0
    flip_byte(real_images / MANIFEST_NAME, 100)
    for command in ("verify", "inspect"):
        result = run(command, str(real_images))
        assert refused(result)
        assert f"{real_images / MANIFEST_NAME}: {MISMATCH}" in result.output


@pytest.mark.parametrize("position", [0, 40, -3])
def test_verify_and_inspect_name_a_damaged_card_in_one_sentence(real_images, position):
    flip_byte(real_images / CARD_NAME, position)
    for command in ("verify", "inspect"):
        result = run(command, str(real_images))
        assert refused(result)
        assert f"{real_images / CARD_NAME}: " in result.output
