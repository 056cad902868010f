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


@pytest.fixture(scope="session")
def mixed_tile_dataset(tmp_path_factory):
    """scikit-image tiles mixing gray, RGB, RGBA and palette, 8 and 16 bit, PNG, JPEG and
    TIFF: 21 samples, whole tile kinds in train or val, in shards of 4."""
    from tests.real_data import mixed_tile_table

    root = tmp_path_factory.mktemp("loader-mixed")
    table = mixed_tile_table(root / "raw")
    ingest(
        table,
        root / "ds",
        label_col="stage",
        group_col="patient",
        val_fraction=0.3,
        shard_samples=4,
    )
    return root / "ds"


@pytest.fixture(scope="session")
def real_mri_dataset(tmp_path_factory):
    """nibabel's real MRI volumes (25 x 41 x 33, 22 x 26 x 21 and 7 x 5 x 4) with masks."""
    from tests.real_data import ingest_real_mri

    return ingest_real_mri(tmp_path_factory.mktemp("loader-mri"))
