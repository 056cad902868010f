"""Shard descriptors are opened once, shared, and closed when their reader is dropped."""

import gc
import os
import pickle

import pytest

from medshard.loaders.build import build_loader
from medshard.shards.open_files import OpenFiles


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count descriptors")
def test_a_dropped_reader_closes_its_files_and_a_copy_starts_empty(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    files = OpenFiles()
    fd = files.fd("a", tmp_path / "a")
    assert files.fd("a", tmp_path / "a") == fd and os.pread(fd, 3, 0) == b"abc"
    copy = pickle.loads(pickle.dumps(files))
    assert copy.fd("a", tmp_path / "a") != fd  # its own descriptor
    del files
    gc.collect()
    with pytest.raises(OSError):  # closed (nothing opened since could have taken its number)
        os.fstat(fd)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count descriptors")
@pytest.mark.parametrize(
    ("dataset", "options"),
    [("mixed_tile_dataset", {}), ("real_mri_dataset", {"patch_size": (8, 8, 8)})],
)
def test_loaders_made_every_epoch_leave_no_descriptors_open(request, dataset, options):
    dataset = request.getfixturevalue(dataset)

    def one_epoch():
        loader = build_loader(dataset, "train", batch_size=2, num_workers=1, **options)
        return sum(len(batch["key"]) for batch in loader)

    seen = one_epoch()
    before = open_descriptors()
    for _ in range(5):
        assert one_epoch() == seen
    gc.collect()
    assert open_descriptors() <= before
