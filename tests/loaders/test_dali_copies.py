"""The DALI backend on training copies: raw copies through `fn.decoders.numpy`, JPEG
copies through `fn.decoders.image` (`mixed`, nvJPEG, on a GPU), giving the torch
backend's batches; copies that one DALI batch cannot hold are refused."""

import pytest
import torch

from medshard.errors import DatasetError
from medshard.loaders import Augment2D, build_loader, dali_available
from tests.conftest import ingest, write_table
from tests.real_data import write_mixed_tiles

pytestmark = pytest.mark.skipif(not dali_available(), reason="DALI is installed on Linux only")


def eight_bit_tiles(root, **options):
    """Real 8-bit tiles (RGB, gray, RGBA, palette, and a JPEG) with training copies of 48."""
    rows = []
    for copy in range(2):
        names = write_mixed_tiles(root / f"raw/b{copy}")
        rows += [[f"b{copy}/{n}", "ab"[i % 2]] for i, n in enumerate(names) if "16" not in n]
    table = write_table(root / "raw/labels.csv", ["image_path", "stage"], rows)
    ingest(table, root / "ds", label_col="stage", val_fraction=0.0, train_size="48", **options)
    return root / "ds"


@pytest.fixture(scope="module")
def raw_copies(tmp_path_factory):
    return eight_bit_tiles(tmp_path_factory.mktemp("dali-raw"))


@pytest.fixture(scope="module")
def jpeg_copies(tmp_path_factory):
    return eight_bit_tiles(tmp_path_factory.mktemp("dali-jpeg"), train_format="jpeg")


def both(ds, augment) -> dict[str, list[dict]]:
    spec = dict(batch_size=4, augment=augment, training=False, shuffle=False, device="cpu")
    return {b: list(build_loader(ds, "train", backend=b, **spec)) for b in ("dali", "torch")}


@pytest.mark.parametrize("channels", [None, 1, 3])
@pytest.mark.parametrize("resize", [None, (40, 36)])
def test_raw_copies_through_fn_decoders_numpy_give_the_torch_batches(raw_copies, channels, resize):
    augment = Augment2D(normalize="none", channels=channels, resize=resize)
    got = both(raw_copies, augment)
    assert [b["key"] for b in got["dali"]] == [b["key"] for b in got["torch"]]
    # a resize rounds its sums in each backend's order: one level apart at most
    tolerance = 1.01 / 255 if resize else 1e-6
    for dali, torch_batch in zip(got["dali"], got["torch"]):
        assert dali["image"].shape == torch_batch["image"].shape
        assert dali["image"].shape[2:] == (resize or (48, 48))
        assert (dali["image"] - torch_batch["image"]).abs().max() <= tolerance


def test_jpeg_copies_decode_alike_in_both(jpeg_copies):
    got = both(jpeg_copies, Augment2D(normalize="imagenet", channels=3))
    for dali, torch_batch in zip(got["dali"], got["torch"]):
        # libjpeg-turbo in both, its IDCT and upsampling chosen by each
        assert (dali["image"] - torch_batch["image"]).abs().mean() < 0.01


def test_training_copies_are_augmented_in_the_pipeline(raw_copies):
    augment = Augment2D(random_resized_crop=(32, 32), flip_h=True, rot90=True, contrast=0.2)
    loader = build_loader(raw_copies, "train", batch_size=4, backend="dali", augment=augment)
    batches = list(loader)
    assert sum(len(b["key"]) for b in batches) == 10
    assert all(b["image"].shape[1:] == (3, 32, 32) for b in batches)
    assert all(torch.isfinite(b["image"]).all() for b in batches)


def test_raw_copies_of_two_bit_depths_are_refused_naming_the_way_out(tmp_path):
    from tests.real_data import mixed_tile_table

    table = mixed_tile_table(tmp_path / "raw", copies=1)
    ingest(table, tmp_path / "ds", label_col="stage", val_fraction=0.0, train_size="32")
    with pytest.raises(DatasetError, match="mix uint16 and uint8 values, which one DALI batch"):
        build_loader(tmp_path / "ds", "train", batch_size=2, backend="dali", device="cpu")
    build_loader(tmp_path / "ds", "train", batch_size=2, backend="dali", original=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG (`mixed`) decodes on a GPU")
def test_jpeg_copies_decode_on_the_gpu_as_on_the_cpu(jpeg_copies):
    augment = Augment2D(normalize="none", channels=3)
    spec = dict(batch_size=4, augment=augment, training=False, shuffle=False, backend="dali")
    gpu = list(build_loader(jpeg_copies, "train", device="cuda", **spec))
    cpu = list(build_loader(jpeg_copies, "train", device="cpu", **spec))
    for a, b in zip(gpu, cpu):
        assert a["image"].is_cuda and (a["image"].cpu() - b["image"]).abs().mean() < 0.01
