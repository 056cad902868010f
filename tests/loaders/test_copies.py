"""Which pixels a loader reads: a training copy's shape follows ingest's own rule, and a
raw copy is a view of its member's bytes, never unpickled."""

import io

import numpy as np
import pytest

from medshard.ingest.train_copy import copy_size
from medshard.loaders.copies import copy_shape, npy_view


@pytest.mark.parametrize("train_size", [[256], [48], [7], [224, 256], [33, 17]])
def test_copy_shapes_follow_the_ingest_rule(train_size):
    for channels in (1, 2, 3, 4):
        for height, width in [(512, 384), (100, 60), (64, 64), (3, 1000), (255, 257), (45, 45)]:
            got = copy_shape([channels, height, width], train_size)
            assert got == (1 if channels < 3 else 3, *copy_size(height, width, tuple(train_size)))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_a_raw_copy_is_a_view_of_its_bytes(dtype):
    array = np.arange(2 * 5 * 7, dtype=dtype).reshape(2, 5, 7)
    buffer = io.BytesIO()
    np.save(buffer, array)
    payload = buffer.getvalue()
    view = npy_view(payload)
    assert np.array_equal(view, array) and view.dtype == array.dtype
    assert not view.flags.owndata and not view.flags.writeable  # the bytes themselves


def test_an_array_of_objects_is_refused_unread():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="never unpickled"):
        npy_view(buffer.getvalue())
