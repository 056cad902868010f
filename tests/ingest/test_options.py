"""Ingest options refuse values that would build nothing or something wrong, naming the field."""

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from medshard.ingest.options import IngestOptions, TableIngestOptions

REFUSED = [
    ({"shard_bytes": 0}, "shard_bytes", "greater than 0"),
    ({"shard_bytes": -1}, "shard_bytes", "greater than 0"),
    ({"shard_samples": -5}, "shard_samples", "greater than 0"),
    ({"shard_samples": 0}, "shard_samples", "greater than 0"),
    ({"folds": -1}, "folds", "give 0 (no cross-validation) or 2 or more folds, not -1"),
    ({"folds": 1}, "folds", "give 0 (no cross-validation) or 2 or more folds, not 1"),
    ({"val_fraction": -0.1}, "val_fraction", "greater than or equal to 0"),
    ({"val_fraction": 1.0}, "val_fraction", "less than 1"),
    ({"val_fraction": math.nan}, "val_fraction", "finite number"),
    ({"test_fraction": -0.2}, "test_fraction", "greater than or equal to 0"),
    ({"test_fraction": 1.5}, "test_fraction", "less than 1"),
    (
        {"val_fraction": 0.6, "test_fraction": 0.4},
        "test_fraction",
        "validation 0.6 and test 0.4 leave no sample to train on; their sum must be below 1",
    ),
    ({"workers": 0}, "workers", "greater than or equal to 1"),
    ({"workers": -2}, "workers", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("values", "field", "message"), REFUSED)
def test_values_that_build_nothing_are_refused_naming_the_field(values, field, message):
    with pytest.raises(ValidationError) as caught:
        IngestOptions(out=Path("ds"), **values)
    first = caught.value.errors()[0]
    assert first["loc"] == (field,) and message in first["msg"]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"folds": 0},
        {"folds": 2},
        {"folds": 5, "val_fraction": 0.0, "test_fraction": 0.1},
        {"val_fraction": 0.5, "test_fraction": 0.49},
        {"workers": 1, "shard_bytes": 1, "shard_samples": 1},
        {"workers": None},
    ],
)
def test_values_at_the_edges_are_accepted(values):
    options = IngestOptions(out=Path("ds"), **values)
    assert all(getattr(options, k) == v for k, v in values.items())


def test_a_table_ingest_reads_its_table_folder_and_its_root():
    options = TableIngestOptions(out=Path("ds"), table=Path("raw/labels.csv"), root=Path("data"))
    assert options.inputs() == [Path("raw"), Path("raw/labels.csv"), Path("data")]
    assert Path("ds") not in options.inputs()
    bare = TableIngestOptions(out=Path("ds"), table=Path("raw/labels.csv"))
    assert bare.inputs() == [Path("raw"), Path("raw/labels.csv")]
