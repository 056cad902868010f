import pytest

from tests.conftest import CLASSES, ingest, make_image_table
from tests.volume_data import tiff_root


@pytest.fixture(scope="session")
def image_dataset(tmp_path_factory):
    """24 16-bit PNGs, three classes, in shards of 5 samples."""
    root = tmp_path_factory.mktemp("loader-images")
    table = make_image_table(root / "raw", kind="png16-gray", n=24, groups=24)
    ingest(
        table, root / "ds", label_col="stage", classes=CLASSES, val_fraction=0.0, shard_samples=5
    )
    return root / "ds"


@pytest.fixture(scope="session")
def volume_dataset(tmp_path_factory):
    from medshard.ingest.tiff import TiffIngestOptions, ingest_tiff

    root = tmp_path_factory.mktemp("loader-volumes")
    raw, _ = tiff_root(root / "raw", n=4)
    ingest_tiff(
        TiffIngestOptions(
            root=raw,
            labels=raw / "classes.csv",
            out=root / "ds",
            crops=(6, 10, 12),
            val_fraction=0.0,
            workers=1,
            processes=False,
            quiet=True,
        )
    )
    return root / "ds"
