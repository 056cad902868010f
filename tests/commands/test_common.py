"""The one-sentence failure of every command, also for an error that torch re-raised from a
DataLoader worker process with the worker's traceback in its message."""

import pytest
import torch
import typer

from medshard.commands.common import fail, own_message
from medshard.errors import CorruptDataError

MESSAGE = "ds/wds/train-000000.tar: sample 'a': checksum mismatch: the shard is damaged"


class Damaged(torch.utils.data.Dataset):
    """A dataset whose only sample fails as a damaged shard does, after a first error."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        try:
            raise ValueError("the first cause, on a line of its own")
        except ValueError as exc:
            raise CorruptDataError(MESSAGE + "\nwith a second line") from exc


def test_a_workers_error_is_printed_as_its_own_first_line(capsys):
    loader = torch.utils.data.DataLoader(Damaged(), num_workers=1)
    with pytest.raises(CorruptDataError) as caught:
        next(iter(loader))
    assert str(caught.value).startswith("Caught CorruptDataError in DataLoader worker process 0")
    assert own_message(caught.value) == MESSAGE
    with pytest.raises(typer.Exit):
        fail(caught.value)
    assert capsys.readouterr().err == f"error: {MESSAGE}\n"


def test_any_other_error_is_printed_whole(capsys):
    with pytest.raises(typer.Exit):
        fail(CorruptDataError("Caught nothing: " + MESSAGE))
    assert capsys.readouterr().err == f"error: Caught nothing: {MESSAGE}\n"


class Refusing(torch.utils.data.Dataset):
    """A dataset whose only sample raises a built-in error, which a traceback names bare."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise ValueError("row 3: the label is not a number")


def test_a_workers_built_in_error_is_printed_as_its_own_first_line():
    loader = torch.utils.data.DataLoader(Refusing(), num_workers=1)
    with pytest.raises(ValueError) as caught:
        next(iter(loader))
    assert own_message(caught.value) == "row 3: the label is not a number"
